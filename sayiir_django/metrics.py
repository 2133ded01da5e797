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
docs/howto/observability.md). The storage gauges (``sayiir_instances``,
``sayiir_ready_backlog``, ``sayiir_ready_oldest_age_seconds``) are the database's: from
the first scrape on, this process reads them every 15 seconds on Sayiir's loop thread
(through ``DjangoBackend``'s own threads), never during a scrape.
"""

from __future__ import annotations

import logging
import threading

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from sayiir_core.runtime import loop_thread
from sayiir_core.telemetry import prometheus
from sayiir_core.telemetry.gauges import StatsReporter

try:
    # At import, not at the first scrape: what ran before it would not be counted.
    prometheus.enable()
except prometheus.PrometheusUnavailableError as error:
    raise ImproperlyConfigured(str(error)) from error


logger = logging.getLogger("sayiir.telemetry")

_reporting = threading.Lock()
_reporter: StatsReporter | None = None
# The first scrape waits this long at most for the first reading of the gauges.
_FIRST_READING_WITHIN = 5.0


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape page (OpenMetrics when the scraper asks for it)."""
    _report_database_once()
    page, content_type = prometheus.exposition(request.headers.get("accept"))
    return HttpResponse(page, content_type=content_type)


def _report_database_once() -> None:
    """Start reading the database's counts for the gauges (once per process)."""
    global _reporter
    with _reporting:
        if _reporter is not None or not apps.is_installed("sayiir_django"):
            return

        async def start() -> StatsReporter:
            from sayiir_django.backend import DjangoBackend

            reporter = StatsReporter(DjangoBackend())
            await reporter.refresh()  # so that the first scrape has them already
            return reporter.start()

        try:
            _reporter = loop_thread.submit(start()).result(_FIRST_READING_WITHIN)
        except Exception as error:  # the counters still serve; the gauges stay empty
            logger.warning("sayiir_django.metrics: not reporting the storage gauges: %s", error)
            _reporter = StatsReporter(None)  # do not try on every scrape


__all__ = ["metrics_view"]
