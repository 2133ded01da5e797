"""init_tracing / shutdown_tracing, the Prometheus page, and running without OpenTelemetry."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from telemetry_capture import installed, reset_globals

from sayiir_core import Flow, init_tracing, run_workflow, shutdown_tracing
from sayiir_core.telemetry import otel, prometheus
from sayiir_core.telemetry.instruments import METRIC_NAMES


def double(value: int) -> int:
    return value * 2


@pytest.fixture
def clean_globals() -> object:
    reset_globals()
    yield None
    shutdown_tracing()
    reset_globals()


def test_init_tracing_without_an_endpoint_sets_nothing_up_and_says_why(
    clean_globals: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with caplog.at_level(logging.WARNING, logger="sayiir.telemetry"):
        init_tracing()
    assert otel.tracer() is None
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is not set" in caplog.text


def test_init_tracing_sets_up_the_sdk_with_otlp_once(
    clean_globals: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on this port; no span is made, so nothing is sent.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    init_tracing()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "billing"
    exporters = [
        type(processor.span_exporter).__name__  # type: ignore[attr-defined]
        for processor in provider._active_span_processor._span_processors
    ]
    assert exporters == ["OTLPSpanExporter"]
    init_tracing()  # idempotent
    assert trace.get_tracer_provider() is provider
    assert otel.tracer() is not None
    shutdown_tracing()
    shutdown_tracing()  # twice is fine


def test_init_tracing_keeps_a_provider_the_application_set(clean_globals: object) -> None:
    mine = TracerProvider()
    trace.set_tracer_provider(mine)
    init_tracing()
    assert trace.get_tracer_provider() is mine


def _run_without_opentelemetry(code: str) -> subprocess.CompletedProcess[str]:
    # A None entry in sys.modules makes the import fail: as if the extra were absent.
    prelude = "import sys\nsys.modules['opentelemetry'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_opentelemetry_sayiir_runs_and_init_tracing_says_what_to_install() -> None:
    done = _run_without_opentelemetry(
        """
        import sayiir_core
        from sayiir_core import Flow, run_workflow
        from sayiir_core.telemetry import otel

        def double(value):
            return value * 2

        assert run_workflow(Flow("plain").then(double).build(), 2) == 4
        assert not otel.otel_installed() and otel.tracer() is None
        try:
            sayiir_core.init_tracing()
        except ImportError as error:
            print(error)
        sayiir_core.shutdown_tracing()
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'sayiir-py[otel]'" in done.stdout
    assert done.stderr == ""


def test_without_the_prometheus_exporter_the_error_says_what_to_install() -> None:
    done = _run_without_opentelemetry(
        """
        from sayiir_core.telemetry import prometheus
        try:
            prometheus.exposition()
        except prometheus.PrometheusUnavailableError as error:
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "opentelemetry-exporter-prometheus" in done.stdout


def test_prometheus_exposition_shows_the_step_counters(clean_globals: object) -> None:
    prometheus._enabled = False
    try:
        prometheus.enable()
        run_workflow(Flow("scraped").then(double).build(), 1)
        page, content_type = prometheus.exposition()
    finally:
        prometheus._enabled = False
        provider = metrics.get_meter_provider()
        assert isinstance(provider, MeterProvider)
        provider.shutdown()  # unregisters its collector from prometheus_client's registry
    assert content_type.startswith("text/plain")
    completed = [
        line for line in page.decode().splitlines() if line.startswith("sayiir_steps_completed")
    ]
    assert len(completed) == 1
    assert 'sayiir_task_id="double"' in completed[0]
    assert completed[0].endswith(" 1.0")
    assert "sayiir_step_duration_seconds_bucket" in page.decode()


def test_metric_names_are_the_documented_ones() -> None:
    with installed() as captured:
        run_workflow(Flow("named").then(double).build(), 1)
        names = set(captured.metric_points())
    assert names <= set(METRIC_NAMES)
    assert {"sayiir.steps.started", "sayiir.steps.completed", "sayiir.step.duration"} <= names
