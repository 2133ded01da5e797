"""An opt-in Prometheus scrape endpoint for Sayiir's metrics.

::

    from sayiir_fastapi.metrics import metrics_router

    app.include_router(metrics_router())  # GET /metrics

Needs ``opentelemetry-sdk``, ``opentelemetry-exporter-prometheus`` and
``prometheus-client``; ``metrics_router()`` raises ``PrometheusUnavailableError`` (an
``ImportError`` naming them) when they are missing, so a misconfigured app fails at
start, not at the first scrape. With no meter provider set yet it sets one that feeds
Prometheus; an app that set its own must give it a ``PrometheusMetricReader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.params import Depends

from sayiir_core.telemetry import prometheus
from sayiir_core.telemetry.prometheus import PrometheusUnavailableError


def metrics_endpoint(request: Request) -> Response:
    """The scrape page (OpenMetrics when the scraper asks for it)."""
    page, content_type = prometheus.exposition(request.headers.get("accept"))
    return Response(content=page, media_type=content_type)


def metrics_router(
    *, path: str = "/metrics", dependencies: Sequence[Depends] | None = None, **options: Any
) -> APIRouter:
    """A router serving ``GET path``; ``dependencies`` guard it (an auth check, say).

    ``options`` go to ``APIRouter`` (``tags``, ``include_in_schema``...); the endpoint
    is left out of the OpenAPI schema unless ``include_in_schema=True`` is given there.
    """
    prometheus.enable()
    include = options.pop("include_in_schema", False)
    router = APIRouter(dependencies=dependencies, **options)
    router.add_api_route(
        path, metrics_endpoint, methods=["GET"], include_in_schema=include, name="sayiir_metrics"
    )
    return router


__all__ = ["PrometheusUnavailableError", "metrics_endpoint", "metrics_router"]
