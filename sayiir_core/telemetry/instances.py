"""A span and metrics for one run of an instance, around ``DurableRunner``'s loop.

The span covers one stretch of running (until the instance finishes or parks); a
resumed instance gets a new span, a sibling under the same stored parent. History
events that are not step attempts (retries scheduled, timers, signals, pause,
cancel, the end) become span events, fed by the runner's ``EventListener``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sayiir_core.status import Status
from sayiir_core.telemetry import otel
from sayiir_core.telemetry.attributes import (
    ATTR_ERROR_TYPE,
    ATTR_INSTANCE,
    ATTR_OUTCOME,
    ATTR_WORKER,
    ATTR_WORKFLOW,
)
from sayiir_core.telemetry.instruments import Instruments, instruments
from sayiir_core.telemetry.propagation import context_from
from sayiir_core.telemetry.steps import current_worker_id, otel_modules

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from sayiir_core.backends.base import Claim, HistoryEvent
    from sayiir_core.backends.step_queue import ClaimedStep

SPAN_EVENT_KINDS = frozenset(
    {
        "retry_scheduled",
        "timer_started",
        "timer_fired",
        "signal_received",
        "paused",
        "unpaused",
        "cancelled",
        "completed",
        "failed",
        "definition_changed",
    }
)
"""History kinds recorded as events on the instance span (steps have their own spans)."""

_FINAL_KINDS = frozenset({"completed", "failed", "cancelled"})


def tracing_on() -> bool:
    """A real tracer provider is set: only then is a stored trace context worth reading."""
    return otel.tracer() is not None


def observe_instance(
    workflow_id: str,
    instance_id: str,
    created_at: float,
    worker_id: str | None,
    parent: Mapping[str, Any] | None,
) -> InstanceObservation | None:
    """The run's observation, or ``None`` when tracing and metrics are both off.

    ``parent`` is the stored trace context (``None``: continue the current context,
    the case when the instance was created by this very call). ``worker_id`` is
    ``None`` for a run with nothing stored (``run_workflow`` without an instance id).
    """
    tracer = otel.tracer()
    meters = instruments()
    if tracer is None and meters is None:
        return None
    return InstanceObservation(
        tracer, meters, workflow_id, instance_id, created_at, worker_id, parent
    )


class InstanceObservation:
    """``with observation:`` around the run; ``on_events`` for each write's history."""

    def __init__(
        self,
        tracer: Tracer | None,
        meters: Instruments | None,
        workflow_id: str,
        instance_id: str,
        created_at: float,
        worker_id: str | None,
        parent: Mapping[str, Any] | None,
    ) -> None:
        self._tracer = tracer
        self._meters = meters
        self._workflow_id = workflow_id
        self._instance_id = instance_id
        self._created_at = created_at
        self._worker_id = worker_id
        self._parent = parent
        self._span: Span | None = None
        self._token: Any = None
        self._worker_token: Any = None
        self._outcome: str | None = None

    def __enter__(self) -> InstanceObservation:
        self._worker_token = current_worker_id.set(self._worker_id)
        if self._tracer is not None:
            attributes = {ATTR_WORKFLOW: self._workflow_id, ATTR_INSTANCE: self._instance_id}
            if self._worker_id is not None:
                attributes[ATTR_WORKER] = self._worker_id
            self._span = self._tracer.start_span(
                f"workflow {self._workflow_id}",
                context=context_from(self._parent),
                attributes=attributes,
            )
            # What use_span does, without its generator: one context copy, attached.
            context_api, trace_api = otel_modules()
            self._token = context_api.attach(trace_api.set_span_in_context(self._span))
        return self

    def on_events(self, events: Iterable[HistoryEvent]) -> None:
        """Record the history events just written (span events, workflow duration)."""
        for event in events:
            if event.kind not in SPAN_EVENT_KINDS:
                continue
            if self._span is not None:
                self._span.add_event(event.kind, _event_attributes(event), _nanos(event.at))
            if event.kind in _FINAL_KINDS:
                self._outcome = event.kind
                if self._meters is not None:
                    self._meters.workflow_duration.record(
                        max(0.0, event.at - self._created_at),
                        {ATTR_WORKFLOW: self._workflow_id, ATTR_OUTCOME: event.kind},
                    )

    def finish(self, status: str) -> None:
        """The instance's status when this run stopped (``completed``, ``waiting``...)."""
        if self._outcome is None:
            self._outcome = status

    def ended_unstored(self, status: str, at: float) -> None:
        """A run with nothing stored stopped: no history events came through ``on_events``.

        Records the end as they would: a span event and the workflow duration.
        """
        if status in _FINAL_KINDS:
            from sayiir_core.backends.base import HistoryEvent

            self.on_events([HistoryEvent(status, at)])
        self.finish(status)

    def lease_lost(self) -> None:
        if self._meters is not None:
            self._meters.leases_lost.add(1, {ATTR_WORKFLOW: self._workflow_id})

    def commit_fenced(self) -> None:
        if self._meters is not None:
            self._meters.commits_fenced.add(1, {ATTR_WORKFLOW: self._workflow_id})

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current_worker_id.reset(self._worker_token)
        span = self._span
        if span is None:
            return
        if kind is not None:
            from opentelemetry.trace import Status, StatusCode

            self._outcome = "lease_lost" if kind.__name__ == "LeaseLostError" else "error"
            span.set_attribute(ATTR_ERROR_TYPE, kind.__name__)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        elif self._outcome == "failed":
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, "workflow failed"))
        span.set_attribute(ATTR_OUTCOME, self._outcome or "unknown")
        otel_modules()[0].detach(self._token)
        span.end()


def count_takeover(workflow_id: str) -> None:
    """An instance or a shared step was claimed here after another claim's lease ran out."""
    meters = instruments()
    if meters is not None:
        meters.leases_taken_over.add(1, {ATTR_WORKFLOW: workflow_id})


def count_takeovers(claims: Iterable[Claim]) -> None:
    """Count the claims (from ``claim_next``) that continue a run cut off elsewhere.

    A claimable instance still ``running`` was left mid-run by its owner: its lease
    ran out (the owner died or hung), or the owner gave the claim back unfinished
    (storage trouble, a shutdown grace that ran out). An instance that never ran is
    ``pending``; one that parked is ``waiting`` or ``awaiting_signal``. This is also
    the runtime's own test for routing a taken-over instance's steps (``worker.py``).
    """
    if otel.meter() is None:
        return
    for claim in claims:
        record = claim.instance.record
        if record.status is Status.RUNNING:
            count_takeover(record.workflow_id)


def count_step_takeovers(steps: Iterable[ClaimedStep]) -> None:
    """Count the shared steps just claimed that took an expired lease over.

    For every place that claims steps (``claim_steps``, ``claim_step``,
    ``claim_step_and_instance``): the backend says which claims found a lease that had
    run out (``ClaimedStep.taken_over``); they are counted with the instance takeovers.
    """
    if otel.meter() is None:
        return
    for step in steps:
        if step.taken_over:
            count_takeover(step.ticket.workflow_id)


def _event_attributes(event: HistoryEvent) -> dict[str, str | int | float]:
    attributes: dict[str, str | int | float] = {}
    if event.step_key is not None:
        attributes["sayiir.step.key"] = event.step_key
    if event.attempt is not None:
        attributes["sayiir.step.attempt"] = event.attempt
    if event.worker_id is not None:
        attributes[ATTR_WORKER] = event.worker_id
    for key, value in (event.detail or {}).items():
        if key != "traceback" and isinstance(value, str | int | float):
            attributes[f"sayiir.{key}"] = value
    return attributes


def _nanos(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
