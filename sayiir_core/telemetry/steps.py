"""A span and metrics for one step attempt, around ``LocalExecutor.execute``.

The span is the current span while the task function runs: for async tasks because
they run inside the attempt's asyncio task, for sync tasks because the executor hands
``context`` to the thread and attaches it there (a sync task runs under a fresh
``contextvars.Context``).

This is the per-step hot path with telemetry on, so it does the least it can beyond
the SDK's own span and histogram record: one probe of both providers (``observe_step``),
the step counters are plain counts in a per-thread row (see ``instruments``), the
histogram's attribute dicts are made once per step and outcome, the span carries no
attribute that repeats another (the SDK cleans and copies each one), and it is attached
on the event loop only for an async task (``set_span_in_context`` + ``attach``, which is
what ``use_span`` does, without its generator); a sync task's thread attaches it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from contextvars import ContextVar
from inspect import CO_COROUTINE
from types import FunctionType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from sayiir_core.telemetry import otel
from sayiir_core.telemetry.attributes import (
    ATTR_ATTEMPT,
    ATTR_ERROR_TYPE,
    ATTR_INSTANCE,
    ATTR_OUTCOME,
    ATTR_STEP_KEY,
    ATTR_TASK,
    ATTR_WORKER,
    ATTR_WORKFLOW,
)
from sayiir_core.telemetry.instruments import (
    COMPLETED,
    FAILED,
    RETRIED,
    STARTED,
    Instruments,
    instruments,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from sayiir_core.runtime.executor import TaskOutcome, TaskRequest

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_ERROR_TYPE",
    "ATTR_INSTANCE",
    "ATTR_OUTCOME",
    "ATTR_STEP_KEY",
    "ATTR_TASK",
    "ATTR_WORKER",
    "ATTR_WORKFLOW",
    "StepObservation",
    "attach_in_thread",
    "current_worker_id",
    "observe_step",
    "otel_modules",
]

# Set by the runner of an instance for the steps it starts (asyncio tasks copy it).
current_worker_id: ContextVar[str | None] = ContextVar("sayiir_worker_id", default=None)

_modules: tuple[ModuleType, ModuleType] | None = None
_sys_modules = sys.modules
_seen: tuple[object, object, Tracer | None, Instruments | None] = (None, None, None, None)
"""The tracer and meter providers seen last, and the tracer and instruments made for them."""


def otel_modules() -> tuple[ModuleType, ModuleType]:
    """``(opentelemetry.context, opentelemetry.trace)``, imported once (only when on)."""
    global _modules
    if _modules is None:
        from opentelemetry import context, trace

        _modules = (context, trace)
    return _modules


def observe_step(request: TaskRequest) -> StepObservation | None:
    """The attempt's observation, or ``None`` when tracing and metrics are both off.

    Asked on every step: the providers are read from the API's globals, and unless they
    changed since the last step, the tracer and instruments made for them are reused.
    """
    global _seen
    api = _sys_modules.get("opentelemetry.trace")
    internal = _sys_modules.get("opentelemetry.metrics._internal")
    tracer_provider = None if api is None else api.__dict__.get("_TRACER_PROVIDER")
    meter_provider = None if internal is None else internal.__dict__.get("_METER_PROVIDER")
    if tracer_provider is None and meter_provider is None:
        return None  # the common "API imported, nothing set up" case
    seen = _seen
    if seen[0] is tracer_provider and seen[1] is meter_provider:
        tracer, meters = seen[2], seen[3]
    else:
        # A proxy or no-op provider gives None: off, as without one.
        tracer, meters = otel.tracer(), instruments()
        _seen = (tracer_provider, meter_provider, tracer, meters)
    if tracer is None and meters is None:
        return None
    return StepObservation(request, tracer, meters)


class StepObservation:
    """Use as ``with observation:`` around the attempt; ``finish(outcome)`` before exit."""

    __slots__ = (
        "_counts",
        "_meters",
        "_outcome",
        "_request",
        "_span",
        "_token",
        "_tracer",
        "context",
    )

    def __init__(
        self, request: TaskRequest, tracer: Tracer | None, meters: Instruments | None
    ) -> None:
        self._request = request
        self._tracer = tracer
        self._meters = meters
        self._span: Span | None = None
        self._token: Any = None
        self._outcome: str | None = None
        self._counts: list[int] | None = None
        self.context: Context | None = None
        """The OpenTelemetry context with the step span current, for a sync task's thread."""

    def __enter__(self) -> StepObservation:
        request = self._request
        meters = self._meters
        task_id = request.task.task_id
        if meters is not None:
            # This thread's row: finish() runs on the same event loop, so the same thread.
            self._counts = counts = meters.step_counts.row((request.workflow_id, task_id))
            counts[STARTED] += 1
            if request.attempt > 1:
                counts[RETRIED] += 1
        if self._tracer is not None:
            context_api, trace_api = otel_modules()
            attributes: dict[str, str | int] = {
                ATTR_WORKFLOW: request.workflow_id,
                ATTR_INSTANCE: request.instance_id,
                ATTR_TASK: task_id,
                ATTR_ATTEMPT: request.attempt,
            }
            # The SDK cleans and copies every attribute (~8 % of a trivial step each):
            # the key only where it says more than the task id (map items, loops).
            if request.key != task_id:
                attributes[ATTR_STEP_KEY] = request.key
            worker = current_worker_id.get()
            if worker is not None:
                attributes[ATTR_WORKER] = worker
            span = self._tracer.start_span(f"step {task_id}", attributes=attributes)
            self._span = span
            self.context = trace_api.set_span_in_context(span)
            # A sync task runs in a fresh context on its thread, which attaches
            # ``self.context`` itself; only an async task runs in this one.
            if _is_async(request.task.fn):
                self._token = context_api.attach(self.context)
        return self

    def finish(self, outcome: TaskOutcome) -> None:
        """Record how the attempt went (the span stays open until the ``with`` exits)."""
        # TaskFailure is the outcome with an ``error`` (no import of the executor here).
        error = getattr(outcome, "error", None)
        self._outcome = "completed" if error is None else "failed"
        meters, counts = self._meters, self._counts
        if meters is not None and counts is not None:
            counts[COMPLETED if error is None else FAILED] += 1
            request = self._request
            meters.record_step_duration(
                (request.workflow_id, request.task.task_id),
                self._outcome,
                outcome.finished_at - outcome.started_at,
            )
        span = self._span
        if span is not None and error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute(ATTR_ERROR_TYPE, error.error_type)
            span.set_attribute("sayiir.step.retryable", getattr(outcome, "retryable", False))
            span.set_status(Status(StatusCode.ERROR, error.message))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        if self._outcome is None:  # cancelled (instance cancelled, lease lost) or dispatched
            self._outcome = "cancelled" if kind is not None else "unknown"
            if kind is not None:
                span.set_attribute(ATTR_ERROR_TYPE, kind.__name__)
        span.set_attribute(ATTR_OUTCOME, self._outcome)
        if self._token is not None:
            otel_modules()[0].detach(self._token)
        span.end()


def _is_async(fn: Callable[..., Any]) -> bool:
    """The executor's test: a coroutine function (or an object with an async ``__call__``)."""
    if type(fn) is FunctionType:
        return bool(fn.__code__.co_flags & CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def attach_in_thread(context: Context | None) -> None:
    """Make ``context`` current in a sync task's fresh ``contextvars.Context``.

    No detach: that context is thrown away when the task returns.
    """
    if context is not None:
        otel_modules()[0].attach(context)
