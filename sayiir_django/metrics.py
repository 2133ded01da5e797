"""An opt-in Prometheus scrape view for Sayiir's metrics.

::

    # urls.py
    from sayiir_django.metrics import metrics_view

    urlpatterns = [path("metrics", metrics_view)]

Needs ``opentelemetry-sdk``, ``opentelemetry-exporter-prometheus`` and
``prometheus-client``; without them importing this module (so loading the URLconf)
raises ``ImproperlyConfigured`` naming them. Importing it also starts collecting: with
no meter provider set it sets one that feeds Prometheus. Wrap the view in your own
decorators to restrict who may scrape (``staff_member_required``, an IP check).

The page shows what this process counted: steps run by ``manage.py sayiir worker``
processes are counted there, so give those their own exporter (see
docs/howto/observability.md).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from sayiir_core.telemetry import prometheus

try:
    # At import, not at the first scrape: what ran before it would not be counted.
    prometheus.enable()
except prometheus.PrometheusUnavailableError as error:
    raise ImproperlyConfigured(str(error)) from error


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape page (OpenMetrics when the scraper asks for it)."""
    page, content_type = prometheus.exposition(request.headers.get("accept"))
    return HttpResponse(page, content_type=content_type)


__all__ = ["metrics_view"]
