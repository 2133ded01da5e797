"""Observability: OpenTelemetry traces and metrics, and the ``sayiir.*`` loggers.

All optional: without ``opentelemetry-api``, or with it but no SDK provider set, the
runtime does no telemetry work at all (a probe of one global per step). With a tracer
provider set, every instance run and every step attempt gets a span; with a meter
provider set, the instruments in ``instruments.py`` count and time them.

* ``otel``: is it on? (guarded imports, cached tracer and meter)
* ``setup``: ``init_tracing()`` / ``shutdown_tracing()`` (SDK + OTLP exporter)
* ``propagation``: the submitter's W3C trace context, stored in the ``started`` event
* ``steps`` / ``instances``: the spans, span events and metrics of attempts and runs
* ``advances``: the workflow span of a step run from a message (a Celery task)
* ``instruments``: metric names and instruments
* ``gauges``: instances by status and the ready backlog, read from storage on the
  worker's loop (``report_backend_stats``) and reported by observable gauges
* ``prometheus``: the scrape page for the FastAPI and Django endpoints
* ``logs``: the ``sayiir.*`` logger tree with instance and task ids on each record
"""

from sayiir_core.telemetry.propagation import TRACE_CONTEXT_KEY
from sayiir_core.telemetry.setup import init_tracing, shutdown_tracing

__all__ = ["TRACE_CONTEXT_KEY", "init_tracing", "shutdown_tracing"]
