"""``advance(workflow, snapshot, event) -> (snapshot, commands)``: the whole engine logic.

The machine never runs user code, reads a clock or touches storage. After applying an
event it walks the graph from the workflow input, reusing every checkpointed result,
until each path reaches a step without one: those steps form the frontier it reports as
commands. Because the frontier is derived from the checkpoints alone, resuming after a
crash is the same walk as any other step, and a checkpointed step is never run again.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sayiir_core.machine.commands import AwaitSignal, Command, Complete, Fail, RunTask, WakeAt
from sayiir_core.machine.events import (
    CancelRequested,
    Event,
    PauseRequested,
    SignalReceived,
    SignalTimedOut,
    TaskCompleted,
    TaskFailed,
    Unpaused,
)
from sayiir_core.machine.state import ErrorInfo, Snapshot
from sayiir_core.status import Status
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
)
from sayiir_core.workflow.loop_result import LoopResult
from sayiir_core.workflow.workflow import Workflow


def loop_iteration_key(body_id: str, iteration: int) -> str:
    return f"{body_id}#{iteration}"


def map_item_key(fn_id: str, index: int) -> str:
    return f"{fn_id}[{index}]"


@functools.lru_cache(maxsize=256)
def _item_keys(fn_id: str, count: int) -> tuple[str, ...]:
    # A map's walk visits every item on every event; naming them once keeps it cheap.
    return tuple(map_item_key(fn_id, index) for index in range(count))


def task_id_of_key(key: str) -> str:
    """The task id a step key belongs to (``fetch[3]`` and ``fetch#3`` -> ``fetch``)."""
    for marker in ("#", "["):
        cut = key.find(marker)
        if cut != -1:
            return key[:cut]
    return key


def advance(
    workflow: Workflow,
    snapshot: Snapshot,
    event: Event,
    *,
    running: Collection[str] = (),
) -> tuple[Snapshot, list[Command]]:
    """Apply ``event`` to ``snapshot`` and say what must happen next.

    ``running`` names the steps the driver is running already: they are not asked for
    again, which keeps a wide fan-out from re-issuing its whole frontier on every event.
    """
    if snapshot.status.is_terminal:
        return snapshot, []
    if isinstance(event, CancelRequested):
        return dataclasses.replace(snapshot, status=Status.CANCELLED), []
    if isinstance(event, PauseRequested):
        return dataclasses.replace(snapshot, status=Status.PAUSED), []

    state = _MutableState(snapshot)
    if isinstance(event, TaskCompleted):
        state.complete(event.key, event.output)
    elif isinstance(event, SignalReceived):
        state.complete(event.key, event.payload)
    elif isinstance(event, TaskFailed):
        failure = state.record_failure(workflow, event)
        if failure is not None:
            return state.freeze(Status.FAILED, error=failure), [Fail(failure)]
    elif isinstance(event, SignalTimedOut):
        timeout = _signal_timeout_error(workflow, event.key)
        if event.key not in state.results:
            return state.freeze(Status.FAILED, error=timeout), [Fail(timeout)]
    elif isinstance(event, Unpaused):
        state.status = Status.RUNNING
    now = event.now

    if state.status == Status.PAUSED:
        return state.freeze(Status.PAUSED), []
    walker = _Walker(state, now, running)
    outcome = walker.walk(workflow.pipeline, snapshot.input)
    if isinstance(outcome, _Failed):
        return state.freeze(Status.FAILED, error=outcome.error), [Fail(outcome.error)]
    if isinstance(outcome, _Done):
        return state.freeze(Status.COMPLETED, output=outcome.value), [Complete(outcome.value)]
    return state.freeze(walker.status()), walker.commands


def _signal_timeout_error(workflow: Workflow, key: str) -> ErrorInfo:
    node = workflow.signals[key]
    return ErrorInfo(
        "SignalTimeoutError",
        f"no signal {node.signal_name!r} arrived within {node.timeout_secs}s",
        key,
        kind="signal_timeout",
    )


def start(input_value: Any) -> Snapshot:
    """The snapshot of a new instance, before its first ``Tick``."""
    return Snapshot(input=input_value)


# -- mutable working copy --------------------------------------------------------------


class _MutableState:
    """Copy-on-write view of a snapshot while one event is applied."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self.status = snapshot.status
        self.results: Mapping[str, Any] = snapshot.results
        self.attempts: Mapping[str, int] = snapshot.attempts
        self.retry_at: Mapping[str, float] = snapshot.retry_at
        self.timers: Mapping[str, float] = snapshot.timers

    def complete(self, key: str, value: Any) -> None:
        if key in self.results:
            return  # a checkpoint is written once; a late duplicate changes nothing
        self.results = {**self.results, key: value}
        if key in self.attempts:
            self.attempts = _without(self.attempts, key)
        if key in self.retry_at:
            self.retry_at = _without(self.retry_at, key)
        if key in self.timers:
            self.timers = _without(self.timers, key)

    def record_failure(self, workflow: Workflow, event: TaskFailed) -> ErrorInfo | None:
        """Schedule a retry, or return the error that fails the instance."""
        if event.key in self.results:
            return None  # a late failure of a step that already succeeded elsewhere
        failed_attempts = self.attempts.get(event.key, 0) + 1
        policy = workflow.tasks[task_id_of_key(event.key)].metadata.retries
        if not event.retryable or policy is None or failed_attempts > policy.max_retries:
            return event.error
        self.attempts = {**self.attempts, event.key: failed_attempts}
        delay = policy.delay_before_retry(failed_attempts, event.jitter_sample)
        self.retry_at = {**self.retry_at, event.key: event.now + delay}
        return None

    def set_timer(self, key: str, when: float) -> None:
        self.timers = {**self.timers, key: when}

    def freeze(
        self, status: Status, *, output: Any = None, error: ErrorInfo | None = None
    ) -> Snapshot:
        return Snapshot(
            input=self._snapshot.input,
            status=status,
            results=_frozen(self.results),
            attempts=_frozen(self.attempts),
            retry_at=_frozen(self.retry_at),
            timers=_frozen(self.timers),
            output=output,
            error=error,
        )


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    copy = dict(mapping)
    del copy[key]
    return copy


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


# -- the walk --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Done:
    value: Any


@dataclass(frozen=True, slots=True)
class _Failed:
    error: ErrorInfo


class _PendingType:
    __slots__ = ()


_PENDING: Final = _PendingType()

_Outcome = _Done | _Failed | _PendingType


class _Walker:
    """Walks the graph over the checkpoints, collecting the frontier as commands."""

    def __init__(self, state: _MutableState, now: float, running: Collection[str]) -> None:
        self._state = state
        self._now = now
        self._running = running
        self._saw_running = False
        self.commands: list[Command] = []

    def status(self) -> Status:
        if self._saw_running or any(isinstance(command, RunTask) for command in self.commands):
            return Status.RUNNING
        if any(isinstance(command, AwaitSignal) for command in self.commands):
            return Status.AWAITING_SIGNAL
        return Status.WAITING

    def walk(self, pipeline: Pipeline, value: Any) -> _Outcome:
        for node in pipeline:
            outcome = self._step(node, value)
            if not isinstance(outcome, _Done):
                return outcome
            value = outcome.value
        return _Done(value)

    def _step(self, node: Node, value: Any) -> _Outcome:
        if isinstance(node, TaskNode):
            return self._task(node, node.task_id, value)
        if isinstance(node, ForkNode):
            return self._fork(node, value)
        if isinstance(node, RouteNode):
            return self._route(node, value)
        if isinstance(node, LoopNode):
            return self._loop(node, value)
        if isinstance(node, MapNode):
            return self._map(node, value)
        if isinstance(node, ChildFlowNode):
            return self.walk(node.pipeline, value)
        if isinstance(node, DelayNode):
            return self._delay(node, value)
        return self._signal(node)

    def _task(self, node: TaskNode, key: str, value: Any) -> _Outcome:
        results = self._state.results
        if key in results:
            return _Done(results[key])
        due = self._state.retry_at.get(key)
        if due is not None and due > self._now:
            self.commands.append(WakeAt(key, due, "retry"))
            return _PENDING
        if key in self._running:
            self._saw_running = True
            return _PENDING
        attempt = self._state.attempts.get(key, 0) + 1
        self.commands.append(RunTask(key, node, value, attempt))
        return _PENDING

    def _fork(self, node: ForkNode, value: Any) -> _Outcome:
        joined: dict[str, Any] = {}
        pending = False
        for branch in node.branches:
            outcome = self.walk(branch, value)
            if isinstance(outcome, _Failed):
                return outcome
            if isinstance(outcome, _Done):
                first = branch[0]
                assert isinstance(first, TaskNode)
                joined[first.task_id] = outcome.value
            else:
                pending = True
        if pending:
            return _PENDING
        return self._task(node.join, node.join.task_id, joined)

    def _route(self, node: RouteNode, value: Any) -> _Outcome:
        key_outcome = self._task(node.key_fn, node.key_fn.task_id, value)
        if not isinstance(key_outcome, _Done):
            return key_outcome
        key = key_outcome.value
        if not isinstance(key, str):
            return _Failed(
                ErrorInfo(
                    "TypeError",
                    f"route {node.node_id!r}: the key function must return a str, "
                    f"got {type(key).__name__} {key!r}",
                    node.key_fn.task_id,
                    kind="workflow",
                )
            )
        branch = node.branch_for(key)
        if branch is None:
            return _Failed(
                ErrorInfo(
                    "ValueError",
                    f"route {node.node_id!r}: key {key!r} has no branch and no default branch",
                    node.key_fn.task_id,
                    kind="workflow",
                )
            )
        outcome = self.walk(branch, value)
        if isinstance(outcome, _Done):
            return _Done({"branch": key, "result": outcome.value})
        return outcome

    def _loop(self, node: LoopNode, value: Any) -> _Outcome:
        body_id = node.body.task_id
        for iteration in range(node.max_iterations):
            outcome = self._task(node.body, loop_iteration_key(body_id, iteration), value)
            if not isinstance(outcome, _Done):
                return outcome
            result = LoopResult.from_wire(outcome.value)
            if result is None:
                return _Failed(
                    ErrorInfo(
                        "TypeError",
                        f"loop body {body_id!r} must return LoopResult.again(...) or "
                        f"LoopResult.done(...), got {type(outcome.value).__name__}",
                        body_id,
                        kind="workflow",
                    )
                )
            if result.is_done:
                return _Done(result.value)
            value = result.value
        if node.on_max == "exit_with_last":
            return _Done(value)
        return _Failed(
            ErrorInfo(
                "MaxIterationsExceeded",
                f"loop {node.node_id!r} reached max_iterations={node.max_iterations}",
                body_id,
                kind="workflow",
            )
        )

    def _map(self, node: MapNode, value: Any) -> _Outcome:
        fn_id = node.fn.task_id
        if not isinstance(value, list):
            return _Failed(
                ErrorInfo(
                    "TypeError",
                    f"map over {fn_id!r} needs a list input, got {type(value).__name__}",
                    fn_id,
                    kind="workflow",
                )
            )
        results = self._state.results
        outputs: list[Any] = []
        unfinished = 0
        limit = node.max_concurrency or len(value)
        running = self._running
        for key, item in zip(_item_keys(fn_id, len(value)), value, strict=True):
            if key in results:
                outputs.append(results[key])
                continue
            unfinished += 1
            if key in running:  # the common case in a wide fan-out: checked inline
                self._saw_running = True
            else:
                self._task(node.fn, key, item)
            if unfinished == limit:
                break  # the first `limit` unfinished items are the whole frontier
        return _PENDING if unfinished else _Done(outputs)

    def _delay(self, node: DelayNode, value: Any) -> _Outcome:
        key = node.node_id
        if key in self._state.results:
            return _Done(value)
        wake_at = self._state.timers.get(key)
        if wake_at is None:
            wake_at = self._now + node.seconds
            self._state.set_timer(key, wake_at)
        if wake_at <= self._now:
            self._state.complete(key, None)
            return _Done(value)
        self.commands.append(WakeAt(key, wake_at, "delay"))
        return _PENDING

    def _signal(self, node: SignalNode) -> _Outcome:
        key = node.node_id
        results = self._state.results
        if key in results:
            return _Done(results[key])
        deadline = self._state.timers.get(key)
        if deadline is None and node.timeout_secs is not None:
            deadline = self._now + node.timeout_secs
            self._state.set_timer(key, deadline)
        # A passed deadline does not fail the wait here: the driver first looks for a
        # buffered signal (it may have arrived in time while nobody ran the instance) and
        # sends SignalTimedOut only if there is none.
        self.commands.append(AwaitSignal(key, node.signal_name, deadline))
        if deadline is not None:
            self.commands.append(WakeAt(key, deadline, "signal_timeout"))
        return _PENDING
