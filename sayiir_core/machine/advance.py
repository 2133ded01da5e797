"""``advance(workflow, snapshot, event) -> (snapshot, commands)``: the whole engine logic.

The machine never runs user code, reads a clock or touches storage. After applying an
event it walks the graph from the workflow input, reusing every checkpointed result,
until each path reaches a step without one: those steps form the frontier it reports as
commands. Because the frontier is derived from the checkpoints alone, resuming after a
crash is the same walk as any other step, and a checkpointed step is never run again.

A driver that passes a ``FrontierCache`` lets the walk skip what an earlier call settled
(the items of a map found done or running, a loop's finished iterations), so an event
costs O(1) per map and loop instead of O(items).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sayiir_core.machine.checkpoints import Checkpoints
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
from sayiir_core.machine.frontier import FrontierCache, MapProgress
from sayiir_core.machine.keys import loop_iteration_key, map_item_keys, task_id_of_key
from sayiir_core.machine.state import Snapshot
from sayiir_core.status import ErrorInfo, Status
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


def advance(
    workflow: Workflow,
    snapshot: Snapshot,
    event: Event,
    *,
    running: Collection[str] = (),
    cache: FrontierCache | None = None,
) -> tuple[Snapshot, list[Command]]:
    """Apply ``event`` to ``snapshot`` and say what must happen next.

    ``running`` names the steps the driver is running already: they are not asked for
    again, which keeps a wide fan-out from re-issuing its whole frontier on every event.
    ``cache`` (see ``FrontierCache``) makes each event cost O(1) per map and loop.
    """
    if cache is None:
        cache = FrontierCache()
    cache.begin(workflow, snapshot, running, getattr(event, "key", None))
    after, commands = _advance(workflow, snapshot, event, running, cache)
    cache.end(after)
    return after, commands


def _advance(
    workflow: Workflow,
    snapshot: Snapshot,
    event: Event,
    running: Collection[str],
    cache: FrontierCache,
) -> tuple[Snapshot, list[Command]]:
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
    walker = _Walker(state, now, running, cache)
    outcome = walker.walk_top(workflow.pipeline, snapshot.input)
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
        assert isinstance(snapshot.results, Checkpoints)  # Snapshot makes it one
        self.results: Checkpoints = snapshot.results
        self.attempts: Mapping[str, int] = snapshot.attempts
        self.retry_at: Mapping[str, float] = snapshot.retry_at
        self.timers: Mapping[str, float] = snapshot.timers

    def complete(self, key: str, value: Any) -> None:
        if key in self.results:
            return  # a checkpoint is written once; a late duplicate changes nothing
        self.results = self.results.with_added(key, value)
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
            results=self.results,
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

# Where one step stands in a walk (``_Walker._item``).
_STEP_DONE: Final = 0
_STEP_RUNNING: Final = 1
_STEP_ASKED: Final = 2  # a RunTask or a retry's WakeAt was added to the commands


class _Walker:
    """Walks the graph over the checkpoints, collecting the frontier as commands."""

    def __init__(
        self, state: _MutableState, now: float, running: Collection[str], cache: FrontierCache
    ) -> None:
        self._state = state
        self._now = now
        self._running = running
        self._cache = cache
        self._saw_running = False
        self.commands: list[Command] = []

    def status(self) -> Status:
        if self._saw_running or any(isinstance(command, RunTask) for command in self.commands):
            return Status.RUNNING
        if any(isinstance(command, AwaitSignal) for command in self.commands):
            return Status.AWAITING_SIGNAL
        return Status.WAITING

    def walk_top(self, pipeline: Pipeline, value: Any) -> _Outcome:
        """``walk`` of the workflow's own pipeline, skipping the nodes an earlier call
        found done (only the top level: a nested pipeline object may be reused with
        different inputs)."""
        first, value = self._cache.pipeline_start() or (0, value)
        for index in range(first, len(pipeline)):
            outcome = self._step(pipeline[index], value)
            if not isinstance(outcome, _Done):
                self._cache.remember_pipeline(index, value)
                return outcome
            value = outcome.value
        self._cache.remember_pipeline(len(pipeline), value)
        return _Done(value)

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
        step = self._item(node, key, value)
        if step == _STEP_DONE:
            return _Done(self._state.results[key])
        if step == _STEP_RUNNING:
            self._saw_running = True
        return _PENDING

    def _item(self, node: TaskNode, key: str, value: Any) -> int:
        """Where the step ``key`` stands; asks for it (a command) if it must run or wait."""
        if key in self._state.results:
            return _STEP_DONE
        due = self._state.retry_at.get(key)
        if due is not None and due > self._now:
            self.commands.append(WakeAt(key, due, "retry"))
            return _STEP_ASKED
        if key in self._running:
            return _STEP_RUNNING
        attempt = self._state.attempts.get(key, 0) + 1
        self.commands.append(RunTask(key, node, value, attempt))
        return _STEP_ASKED

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
        first, value = self._cache.loop_start(body_id) or (0, value)
        for iteration in range(first, node.max_iterations):
            outcome = self._task(node.body, loop_iteration_key(body_id, iteration), value)
            if not isinstance(outcome, _Done):
                # Iterations before this one are done for good: the next walk starts here.
                self._cache.remember_loop(body_id, iteration, value)
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
                self._cache.remember_loop(body_id, iteration, value)
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
        progress = self._cache.map_progress(fn_id, len(value))
        keys = map_item_keys(fn_id, len(value))
        # Items asked for or waiting for a retry before, or named by an event since; the
        # items found running before are not looked at again (see FrontierCache).
        # (A new set each time: a set keeps its largest size, and iterating it costs that.)
        recheck, progress.recheck = sorted(progress.recheck), set()
        for index in recheck:
            self._settle(progress, index, self._item(node.fn, keys[index], value[index]))
        # Then new items, until the first `limit` unfinished ones (the frontier) are known.
        limit = node.max_concurrency or len(value)
        while (
            progress.scanned < len(value) and len(progress.running) + len(progress.recheck) < limit
        ):
            index = progress.scanned
            progress.scanned += 1
            self._settle(progress, index, self._item(node.fn, keys[index], value[index]))
        if progress.running:
            self._saw_running = True
        if progress.running or progress.recheck or progress.scanned < len(value):
            return _PENDING
        if progress.outputs is None:
            results = self._state.results
            progress.outputs = [results[key] for key in keys]
        return _Done(progress.outputs)

    @staticmethod
    def _settle(progress: MapProgress, index: int, step: int) -> None:
        if step == _STEP_ASKED:
            progress.recheck.add(index)
            return
        progress.recheck.discard(index)
        if step == _STEP_RUNNING:
            progress.running.add(index)

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
