"""The Prometheus text exposition of Sayiir's metrics, for the scrape endpoints.

``sayiir_fastapi.metrics`` and ``sayiir_django.metrics`` serve ``exposition()``. With no
meter provider set yet, ``enable()`` sets one that feeds the Prometheus client's
registry; an application that set its own provider must give it a
``PrometheusMetricReader`` itself (else the page shows the process metrics only).
"""

from __future__ import annotations

import threading
from typing import Any

from sayiir_core.telemetry import otel

INSTALL_HINT = (
    "the Prometheus endpoint needs opentelemetry-sdk, opentelemetry-exporter-prometheus "
    "and prometheus-client: pip install 'sayiir-py[otel]' opentelemetry-exporter-prometheus"
)

_lock = threading.Lock()
_enabled = False


class PrometheusUnavailableError(ImportError):
    """The packages the Prometheus endpoint needs are not installed."""


def enable() -> None:
    """Make Sayiir's metrics scrapeable; idempotent. ``PrometheusUnavailableError`` if not."""
    global _enabled
    with _lock:
        if _enabled:
            return
        reader_class, provider_class = _require()
        if otel.meter() is None:
            from opentelemetry import metrics

            metrics.set_meter_provider(provider_class(metric_readers=[reader_class()]))
        _enabled = True


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The scrape page and its content type (OpenMetrics when ``accept`` asks for it)."""
    enable()
    from prometheus_client import REGISTRY
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


def _require() -> tuple[Any, Any]:
    if not otel.otel_installed():
        raise PrometheusUnavailableError(INSTALL_HINT)
    try:
        import prometheus_client  # noqa: F401 - only checking it is there
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
    except ImportError as error:
        raise PrometheusUnavailableError(INSTALL_HINT) from error
    return PrometheusMetricReader, MeterProvider
