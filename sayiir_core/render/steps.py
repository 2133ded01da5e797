"""Where each step of an instance stands, read from its status and history.

``step_states(workflow, status, history)`` maps every checkpointed step id (task ids,
delay and signal ids; a loop's body and a map's function stand for all their
iterations and items) to a ``StepState``. It is a pure function: the UIs call it with
what a client returns (``client.status(id)``, ``client.history(id)``).

The history records a step when it ends (completed, failed, retry scheduled), so a
running step is inferred: a step not ended yet whose predecessors have all ended is on
the *frontier*, and takes its state from the instance (``running``, ``queued`` for an
instance no worker has picked up, ``paused``, ``cancelled``...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sayiir_core.backends.base import HistoryEvent
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.graph import (
    ChildFlowNode,
    DelayNode,
    ForkNode,
    LoopNode,
    MapNode,
    Node,
    Pipeline,
    RouteNode,
    SignalNode,
    TaskNode,
    iter_nodes,
    node_id,
)
from sayiir_core.workflow.workflow import Workflow


class StepState(StrEnum):
    PENDING = "pending"  # not reached (yet)
    QUEUED = "queued"  # next to run; no worker has picked the instance up
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"  # failed an attempt; a retry is scheduled
    WAITING = "waiting"  # a durable delay under way
    AWAITING_SIGNAL = "awaiting_signal"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a route branch that was not taken


# The state of a frontier step (next to run), by the instance's reported status.
_FRONTIER = {
    Status.PENDING: StepState.QUEUED,
    Status.RUNNING: StepState.RUNNING,
    Status.WAITING: StepState.RUNNING,
    Status.AWAITING_SIGNAL: StepState.RUNNING,
    Status.PAUSED: StepState.PAUSED,
    Status.CANCELLED: StepState.CANCELLED,
    Status.FAILED: StepState.PENDING,
    Status.COMPLETED: StepState.COMPLETED,
}


@dataclass(slots=True)
class _Seen:
    """What the history says about each step id (the base id of loop and map keys)."""

    completed: dict[str, set[str]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # the last event kind per step

    @classmethod
    def read(cls, history: Iterable[HistoryEvent]) -> _Seen:
        seen = cls()
        for event in history:
            if event.kind == "retried_from":
                seen._reset(event)
                continue
            if event.step_key is None or event.kind == "task_started":
                continue
            step = task_id_of_key(event.step_key)
            seen.last[step] = event.kind
            if event.kind in ("task_completed", "timer_fired", "signal_received"):
                seen.completed.setdefault(step, set()).add(event.step_key)
        return seen

    def _reset(self, event: HistoryEvent) -> None:
        dropped = (event.detail or {}).get("dropped", [])
        for key in (*dropped, event.step_key or ""):
            step = task_id_of_key(str(key))
            keys = self.completed.get(step)
            if keys is not None:
                keys.discard(str(key))
                if not keys:
                    del self.completed[step]
            self.last.pop(step, None)
        # A reset clears the failure and retry state of every step.
        for step, kind in list(self.last.items()):
            if kind in ("task_failed", "retry_scheduled"):
                del self.last[step]

    def touched(self, step: str) -> bool:
        return step in self.last

    def done(self, step: str) -> bool:
        return step in self.completed


def step_counts(history: Iterable[HistoryEvent]) -> dict[str, int]:
    """How many keys of each step completed: loop iterations and map items, else 0 or 1."""
    return {step: len(keys) for step, keys in _Seen.read(history).completed.items()}


def step_states(
    workflow: Workflow, status: WorkflowStatus, history: Sequence[HistoryEvent]
) -> dict[str, StepState]:
    """The state of every checkpointed step of ``workflow`` for this instance."""
    walker = _Walker(_Seen.read(history), status)
    walker.pipeline(workflow.pipeline, reached=True, after=walker.finished_ok)
    return walker.states


class _Walker:
    def __init__(self, seen: _Seen, status: WorkflowStatus) -> None:
        self.seen = seen
        self.status = Status(status.status)
        self.finished_ok = self.status is Status.COMPLETED
        self.failed_step = (
            task_id_of_key(status.failed_task_id)
            if status.failed_task_id and self.status is Status.FAILED
            else None
        )
        self.signal_id = status.signal_id
        self.states: dict[str, StepState] = {}

    def pipeline(self, pipeline: Pipeline, *, reached: bool, after: bool) -> bool:
        """Walk the nodes in order; returns whether the pipeline's output exists."""
        for index, node in enumerate(pipeline):
            later = after or self._any_touched(pipeline[index + 1 :])
            reached = self.node(node, reached=reached, after=later)
        return reached

    def node(self, node: Node, *, reached: bool, after: bool) -> bool:
        if isinstance(node, TaskNode):
            return self.step(node.task_id, reached=reached, after=after)
        if isinstance(node, DelayNode | SignalNode):
            return self.step(node.node_id, reached=reached, after=after)
        if isinstance(node, LoopNode | MapNode):
            inner = node.body if isinstance(node, LoopNode) else node.fn
            # Only the next step tells that the last iteration (item) was the last.
            self.step(inner.task_id, reached=reached, after=after, repeats=True)
            return after
        if isinstance(node, ForkNode):
            join_after = after or self.seen.touched(node.join.task_id)
            branches_done = [
                self.pipeline(branch, reached=reached, after=join_after) for branch in node.branches
            ]
            return self.step(node.join.task_id, reached=all(branches_done), after=after)
        if isinstance(node, RouteNode):
            return self.route(node, reached=reached, after=after)
        if isinstance(node, ChildFlowNode):
            return self.pipeline(node.pipeline, reached=reached, after=after)
        raise TypeError(f"unknown node {node!r}")

    def route(self, node: RouteNode, *, reached: bool, after: bool) -> bool:
        keyed = self.step(node.key_fn.task_id, reached=reached, after=after)
        branches = [branch for _, branch in node.branches]
        if node.default is not None:
            branches.append(node.default)
        taken = [branch for branch in branches if self._any_touched(branch)]
        decided = bool(taken) or after or self.status.is_terminal
        done = after
        for branch in branches:
            if branch in taken:
                done = self.pipeline(branch, reached=keyed, after=after) or done
            elif keyed and decided:
                self._mark(branch, StepState.SKIPPED)
            else:
                # The key is known to the instance but not to its history: wait and see.
                self.pipeline(branch, reached=False, after=False)
        return done

    def step(self, step: str, *, reached: bool, after: bool, repeats: bool = False) -> bool:
        last = self.seen.last.get(step)
        done = self.seen.done(step) and not repeats
        if step == self.failed_step:
            state = StepState.FAILED
        elif done or (after and (self.seen.done(step) or not repeats)):
            state = StepState.COMPLETED
        elif last == "retry_scheduled":
            state = StepState.RETRYING
        elif last == "timer_started":
            state = self._parked(StepState.WAITING)
        elif self.status is Status.AWAITING_SIGNAL and step == self.signal_id:
            state = StepState.AWAITING_SIGNAL
        elif reached or (repeats and self.seen.touched(step)):
            state = _FRONTIER[self.status]
        else:
            state = StepState.PENDING
        self.states[step] = state
        return state is StepState.COMPLETED

    def _parked(self, state: StepState) -> StepState:
        if self.status in (Status.CANCELLED, Status.PAUSED):
            return _FRONTIER[self.status]
        return state

    def _mark(self, pipeline: Pipeline, state: StepState) -> None:
        for step in _step_ids(pipeline):
            self.states[step] = state

    def _any_touched(self, pipeline: Pipeline) -> bool:
        return any(self.seen.touched(step) for step in _step_ids(pipeline))


def _step_ids(pipeline: Pipeline) -> list[str]:
    ids = []
    for node in iter_nodes(pipeline):
        if isinstance(node, TaskNode | DelayNode | SignalNode):
            ids.append(node_id(node))
    return ids


def states_summary(states: Mapping[str, StepState]) -> dict[str, int]:
    """How many steps are in each state (for a legend or a progress bar)."""
    summary: dict[str, int] = {}
    for state in states.values():
        summary[state.value] = summary.get(state.value, 0) + 1
    return summary
