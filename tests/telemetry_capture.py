"""OpenTelemetry SDK providers with in-memory exporters, installed for one test.

The API lets a process set its global providers once; tests need a fresh pair each,
so ``installed()`` resets the API's globals afterwards (as opentelemetry-test-utils
does), leaving telemetry off for the tests that follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


@dataclass
class Captured:
    tracer_provider: TracerProvider | None
    spans_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith(prefix)]

    def metric_points(self) -> dict[str, list[Any]]:
        """``{metric name: [data points]}`` collected now."""
        data = self.metric_reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        if data is None:
            return points
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def total(self, name: str, **attributes: str) -> float:
        """The sum of counter ``name`` over the points whose attributes include ``attributes``."""
        total = 0.0
        for point in self.metric_points().get(name, []):
            if all(point.attributes.get(key) == value for key, value in attributes.items()):
                total += point.value
        return total

    def histogram_count(self, name: str) -> int:
        return sum(point.count for point in self.metric_points().get(name, []))


def reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


@contextmanager
def installed(*, traces: bool = True, meters: bool = True) -> Iterator[Captured]:
    """Global SDK providers exporting to memory, for the length of the ``with``."""
    reset_globals()
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    tracer_provider = None
    if traces:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(metric_readers=[reader]) if meters else None
    if meter_provider is not None:
        metrics.set_meter_provider(meter_provider)
    try:
        yield Captured(tracer_provider, exporter, reader)
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown()
        reset_globals()
