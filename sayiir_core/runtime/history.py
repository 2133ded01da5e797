"""Turning one machine transition into the history entries stored with it."""

from __future__ import annotations

from collections.abc import Callable, Collection

from sayiir_core.backends.base import HistoryEvent
from sayiir_core.machine import Event, SignalReceived, Snapshot, TaskCompleted, TaskFailed
from sayiir_core.runtime.executor import TaskFailure, TaskOutcome
from sayiir_core.status import Status
from sayiir_core.workflow.graph import DelayNode, iter_nodes
from sayiir_core.workflow.workflow import Workflow

EventListener = Callable[[str, HistoryEvent], None]
"""Called with ``(instance_id, event)`` after each history event is durably written.

It runs on the event loop that runs the instance, between two steps: keep it quick
(print a line, put the event on a queue) and do not block in it.
"""

_FINAL_KINDS = {
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
    Status.PAUSED: "paused",
}


# A tuple made once: ``A | B`` in the call would build a union object on every event.
_STEP_EVENTS = (TaskCompleted, TaskFailed)


def transition_events(
    before: Snapshot,
    after: Snapshot,
    event: Event,
    *,
    outcome: TaskOutcome | None,
    attempt: int | None,
    delay_ids: Collection[str],
    worker_id: str | None,
    now: float,
) -> list[HistoryEvent]:
    events: list[HistoryEvent] = []
    if isinstance(event, _STEP_EVENTS) and outcome is not None:
        ran_on = outcome.worker_id or worker_id
        events.append(HistoryEvent("task_started", outcome.started_at, event.key, attempt, ran_on))
        events.extend(_outcome_events(after, event, outcome, attempt, ran_on))
    elif isinstance(event, SignalReceived):
        events.append(HistoryEvent("signal_received", now, event.key, worker_id=worker_id))
    if after.timers and delay_ids:
        for key, wake_at in after.timers.items():
            if key in delay_ids and key not in before.timers:
                events.append(
                    HistoryEvent(
                        "timer_started", now, key, worker_id=worker_id, detail={"wake_at": wake_at}
                    )
                )
    if delay_ids and len(after.results) != len(before.results):
        for key in after.results_added_since(before):
            if key in delay_ids:
                events.append(HistoryEvent("timer_fired", now, key, worker_id=worker_id))
    if after.status != before.status and after.status in _FINAL_KINDS:
        detail = {"error": str(after.error)} if after.error is not None else None
        events.append(
            HistoryEvent(_FINAL_KINDS[after.status], now, worker_id=worker_id, detail=detail)
        )
    return events


def _outcome_events(
    after: Snapshot,
    event: TaskCompleted | TaskFailed,
    outcome: TaskOutcome,
    attempt: int | None,
    worker_id: str | None,
) -> list[HistoryEvent]:
    duration_ms = round((outcome.finished_at - outcome.started_at) * 1000, 3)
    if not isinstance(outcome, TaskFailure):
        return [
            HistoryEvent(
                "task_completed",
                outcome.finished_at,
                event.key,
                attempt,
                worker_id,
                {"duration_ms": duration_ms},
            )
        ]
    failed = HistoryEvent(
        "task_failed",
        outcome.finished_at,
        event.key,
        attempt,
        worker_id,
        {"error": str(outcome.error), "traceback": outcome.traceback, "duration_ms": duration_ms},
    )
    due = after.retry_at.get(event.key) if after.status is not Status.FAILED else None
    if due is None:
        return [failed]
    retry = HistoryEvent(
        "retry_scheduled",
        outcome.finished_at,
        event.key,
        (attempt or 0) + 1,
        worker_id,
        {"due": due},
    )
    return [failed, retry]


# Workflow -> its delays' ids, by id() with the workflow kept to check it is the same one:
# walking the whole graph on every run cost as much as a few steps of a long chain.
_delays_of: dict[int, tuple[Workflow, frozenset[str]]] = {}
_DELAYS_KEPT = 64


def delay_ids(workflow: Workflow) -> frozenset[str]:
    """The ids of ``workflow``'s delays, whose timers get history entries of their own."""
    known = _delays_of.get(id(workflow))
    if known is not None and known[0] is workflow:
        return known[1]
    ids = frozenset(
        node.node_id for node in iter_nodes(workflow.pipeline) if isinstance(node, DelayNode)
    )
    if len(_delays_of) >= _DELAYS_KEPT:
        _delays_of.clear()  # many workflows in turn (tests, generated ones): start over
    _delays_of[id(workflow)] = (workflow, ids)
    return ids
