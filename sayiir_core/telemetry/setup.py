"""``init_tracing()`` / ``shutdown_tracing()``: the OpenTelemetry SDK with an OTLP exporter."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from sayiir_core.telemetry import otel

logger = logging.getLogger("sayiir.telemetry")

INSTALL_HINT = "pip install 'sayiir-py[otel]'"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_lock = threading.Lock()
_initialized = False
_our_provider: Any = None


def init_tracing() -> None:
    """Export Sayiir's spans over OTLP (HTTP) to ``OTEL_EXPORTER_OTLP_ENDPOINT``.

    Sets up the OpenTelemetry SDK's tracer provider with a batching OTLP exporter; the
    service name comes from ``OTEL_SERVICE_NAME`` (default ``sayiir``) and the other
    standard ``OTEL_*`` variables apply. Idempotent: later calls do nothing. When the
    application already set a tracer provider, that one is kept and Sayiir's spans go
    where it sends them. Without an endpoint in the environment nothing is set up and
    a warning is logged on ``sayiir.telemetry``. Raises ``ImportError`` naming what to
    install when the SDK or the exporter is missing.

    Example::

        # OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 python app.py
        import sayiir_core

        sayiir_core.init_tracing()
        ...
        sayiir_core.shutdown_tracing()  # flush before exit
    """
    global _initialized, _our_provider
    with _lock:
        if _initialized:
            return
        otel.load_providers_from_environment()
        if otel.tracer() is not None:
            logger.info("init_tracing(): a tracer provider is already set; using it")
            _initialized = True
            return
        if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
            _require_packages()  # say what is missing even before an endpoint is set
            logger.warning(
                "init_tracing(): OTEL_EXPORTER_OTLP_ENDPOINT is not set, spans are not "
                "exported; set it (e.g. http://localhost:4318) and call init_tracing() again"
            )
            return
        provider_class, processor_class, exporter_class, resource_class = _require_packages()
        service = os.environ.get("OTEL_SERVICE_NAME") or "sayiir"
        provider = provider_class(resource=resource_class.create({"service.name": service}))
        provider.add_span_processor(processor_class(exporter_class()))
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
        _our_provider = provider
        _initialized = True


def shutdown_tracing() -> None:
    """Flush the spans not yet exported and shut the exporter down; safe to call twice.

    Only a provider ``init_tracing()`` created is shut down; one the application set
    itself is flushed and left to it.
    """
    global _initialized, _our_provider
    with _lock:
        provider, _our_provider = _our_provider, None
        _initialized = False
    if provider is not None:
        provider.shutdown()
        return
    if otel.otel_installed():
        from opentelemetry import trace

        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()


def _require_packages() -> tuple[Any, Any, Any, Any]:
    if not otel.otel_installed():
        raise ImportError(
            f"init_tracing() needs OpenTelemetry (opentelemetry-api, -sdk and the OTLP "
            f"exporter): {INSTALL_HINT}"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ImportError(
            f"init_tracing() needs the OpenTelemetry SDK (opentelemetry-sdk): {INSTALL_HINT}"
        ) from error
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as error:
        raise ImportError(
            "init_tracing() needs the OTLP exporter (opentelemetry-exporter-otlp-proto-http): "
            f"{INSTALL_HINT}"
        ) from error
    return TracerProvider, BatchSpanProcessor, OTLPSpanExporter, Resource
