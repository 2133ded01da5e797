"""The submitter's trace context, stored with the instance and continued where it runs.

At submit, the current W3C trace context (``traceparent``, ``tracestate``) goes into the
``started`` history event's detail under ``trace_context``: no schema change, and every
backend stores it. Whoever runs the instance later (a worker in another process, a
Celery worker, a Django worker) reads it back, only while tracing is on, and starts the
instance's span as its child.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sayiir_core.telemetry import otel

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from sayiir_core.backends.base import HistoryEvent

_continuing: ContextVar[str | None] = ContextVar("sayiir_continuing", default=None)
"""The instance whose stored trace the current context already continues (no re-read)."""

TRACE_CONTEXT_KEY = "trace_context"
"""The key of the stored trace context in the ``started`` event's ``detail``."""


@runtime_checkable
class HistorySource(Protocol):
    """What the stored context is read from: every ``Backend`` (a step queue may be one)."""

    async def history(self, instance_id: str) -> list[HistoryEvent]: ...


def _propagator() -> Any:
    # W3C trace context explicitly, whatever global propagator the app configured: what
    # is stored must be readable by any process that later runs the instance.
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def current_trace_context() -> dict[str, str] | None:
    """The current span's W3C context as a carrier dict; ``None`` when tracing is off."""
    if otel.tracer() is None:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier or None


def context_from(carrier: Mapping[str, Any] | None) -> Context | None:
    """The OpenTelemetry context a stored carrier describes (``None`` for none)."""
    if not carrier or not otel.otel_installed():
        return None
    text = {str(key): str(value) for key, value in carrier.items()}
    extracted: Context = _propagator().extract(text)
    return extracted


def trace_context_of(history: list[HistoryEvent]) -> Mapping[str, Any] | None:
    """The trace context stored in the latest ``started`` event of ``history``."""
    for event in reversed(history):
        if event.kind == "started":
            detail = event.detail or {}
            stored = detail.get(TRACE_CONTEXT_KEY)
            return stored if isinstance(stored, Mapping) else None
    return None


async def stored_trace_context(
    backend: HistorySource, instance_id: str
) -> Mapping[str, Any] | None:
    """The instance's stored trace context; reads its history, so call it only when on."""
    return trace_context_of(await backend.history(instance_id))


async def stored_parent(backend: object, instance_id: str) -> Context | None:
    """The context to run the instance's work under, in a process that did not submit it.

    ``None`` without a query when tracing is off, or when ``backend`` keeps no history
    (a step queue that is not a ``Backend``). For code that runs one step of an
    instance on its own (a shared step, a Celery task), around the executor call::

        parent = await stored_parent(backend, instance_id)
        with attached(parent):
            outcome = await executor.execute(request)
    """
    if otel.tracer() is None or not isinstance(backend, HistorySource):
        return None
    if _continuing.get() == instance_id:
        return None  # a span that continues it is current already (advances.py)
    return context_from(await stored_trace_context(backend, instance_id))


@contextmanager
def attached(context: Context | None) -> Iterator[None]:
    """Make ``context`` current for the ``with`` block (nothing for ``None``)."""
    if context is None:
        yield
        return
    from opentelemetry import context as otel_context

    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)
