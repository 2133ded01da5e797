"""Property tests of the state machine: crashes and schedules never change the outcome.

Hypothesis generates random workflows (chains, forks, routes, loops, maps, child flows,
delays, signals, retry policies) from small specs. Each spec is compiled twice: into a
``Workflow`` for the machine, and into a plain recursive Python function, the reference
interpreter. A pure driver then runs the machine the way a runtime would, but with a
random schedule: tasks of the frontier finish in any order, retryable failures are
injected, the clock jumps to due timers, signals arrive, the instance is paused, and at
random points the process "crashes": in-flight work and every unpersisted transition are
lost and the instance resumes from the last persisted snapshot with a ``Tick``. Tasks
lost in a crash may still complete later, as zombies.

The driver runs in two modes: asking for the whole frontier on every event, and, like
the runtime's runner, telling the machine what runs already and keeping a
``FrontierCache`` (a new one after each crash), which skips the settled parts of maps
and loops.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sayiir_core.machine import (
    AwaitSignal,
    Command,
    ErrorInfo,
    Event,
    FrontierCache,
    PauseRequested,
    RunTask,
    SignalReceived,
    Snapshot,
    TaskCompleted,
    TaskFailed,
    Tick,
    Unpaused,
    WakeAt,
    advance,
    start,
    task_id_of_key,
)
from sayiir_core.status import Status
from sayiir_core.workflow import Flow, LoopResult, RetryPolicy, Workflow, task
from sayiir_core.workflow.task import task_spec

MODULUS = 1000
MAX_EVENTS = 20_000
SIGNAL_TIMEOUT = 1e6  # far beyond any clock the driver reaches: a timeout that never fires

# -- workflow specs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ArithSpec:
    """A task computing ``(norm(x) * a + b) % MODULUS``."""

    a: int
    b: int
    retry: RetryPolicy | None


@dataclass(frozen=True)
class ForkSpec:
    branches: tuple[tuple[ArithSpec, ...], ...]


@dataclass(frozen=True)
class RouteSpec:
    """Route on parity; every ``other_every``-th value yields the undeclared key "other"."""

    even: tuple[ArithSpec, ...]
    odd: tuple[ArithSpec, ...] | None
    default: tuple[ArithSpec, ...] | None
    other_every: int | None


@dataclass(frozen=True)
class LoopSpec:
    """A loop body that counts to ``count``; it returns the wire form when ``wire``."""

    body: ArithSpec
    count: int
    max_iterations: int
    on_max: str
    wire: bool


@dataclass(frozen=True)
class MapSpec:
    """A task that makes a list of ``length`` items, then a map over it."""

    length: int
    item: ArithSpec
    max_concurrency: int | None


@dataclass(frozen=True)
class DelaySpec:
    seconds: float


@dataclass(frozen=True)
class SignalSpec:
    signal_name: str
    payload: int
    timeout: float | None


@dataclass(frozen=True)
class ChildSpec:
    steps: tuple[StepSpec, ...]


StepSpec: TypeAlias = (
    ArithSpec | ForkSpec | RouteSpec | LoopSpec | MapSpec | DelaySpec | SignalSpec | ChildSpec
)

# -- strategies ------------------------------------------------------------------------------

retry_policies = st.none() | st.builds(
    RetryPolicy,
    max_retries=st.integers(1, 3),
    initial_delay_secs=st.sampled_from([0.0, 0.5, 1.0]),
    backoff_multiplier=st.sampled_from([1.0, 2.0]),
    max_delay_secs=st.sampled_from([None, 1.5]),
    jitter=st.sampled_from([0.0, 0.5]),
)
arith_specs = st.builds(ArithSpec, a=st.integers(1, 7), b=st.integers(0, 50), retry=retry_policies)
task_chains = st.lists(arith_specs, min_size=1, max_size=3).map(tuple)


@st.composite
def route_specs(draw: st.DrawFn) -> RouteSpec:
    default = draw(st.none() | task_chains)
    odd = draw(task_chains) if default is None else draw(st.none() | task_chains)
    # An undeclared key fails the run unless there is a default, so keep it rare.
    other_every = draw(st.sampled_from([None, None, None, 2, 3]))
    return RouteSpec(draw(task_chains), odd, default, other_every)


simple_steps: list[st.SearchStrategy[StepSpec]] = [
    arith_specs,
    st.builds(ForkSpec, branches=st.lists(task_chains, min_size=1, max_size=4).map(tuple)),
    route_specs(),
    st.builds(
        LoopSpec,
        body=arith_specs,
        count=st.integers(1, 4),
        max_iterations=st.integers(1, 5),
        on_max=st.sampled_from(["fail", "exit_with_last"]),
        wire=st.booleans(),
    ),
    st.builds(
        MapSpec,
        length=st.integers(0, 6),
        item=arith_specs,
        max_concurrency=st.none() | st.integers(1, 3),
    ),
    st.builds(DelaySpec, seconds=st.sampled_from([0.0, 0.5, 2.0])),
    st.builds(
        SignalSpec,
        signal_name=st.sampled_from(["go", "approve"]),
        payload=st.integers(0, MODULUS - 1),
        timeout=st.sampled_from([None, SIGNAL_TIMEOUT]),
    ),
]


def step_specs(depth: int) -> st.SearchStrategy[tuple[StepSpec, ...]]:
    choices = list(simple_steps)
    if depth > 0:
        choices.append(st.builds(ChildSpec, steps=step_specs(depth - 1)))
    return st.lists(st.one_of(choices), min_size=1, max_size=5).map(tuple)


workflow_specs = step_specs(depth=2)
inputs = st.integers(0, MODULUS - 1)
seeds = st.integers(0, 2**32 - 1)

# -- compiling a spec: a Workflow for the machine, a function for the reference ------------


def norm(value: Any) -> int:
    """Any value a task can produce, folded into ``0 <= n < MODULUS`` deterministically."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value % MODULUS
    if isinstance(value, list):
        return sum((i + 1) * norm(item) for i, item in enumerate(value)) % MODULUS
    if isinstance(value, dict):
        return sum((len(k) + 1) * norm(v) for k, v in sorted(value.items())) % MODULUS
    if isinstance(value, str):
        return len(value)
    if value is None:
        return 0
    raise TypeError(f"unexpected value {value!r}")


class ReferenceFailureError(Exception):
    def __init__(self, kind: str, task_id: str, error_type: str) -> None:
        super().__init__(kind, task_id, error_type)
        self.outcome: Outcome = ("failed", kind, task_id, error_type)


Ref: TypeAlias = Callable[[Any], Any]
Outcome: TypeAlias = tuple[Any, ...]


def chain(refs: Sequence[Ref]) -> Ref:
    def run(value: Any) -> Any:
        for ref in refs:
            value = ref(value)
        return value

    return run


@dataclass
class Compiled:
    workflow: Workflow
    reference: Ref
    signal_payloads: dict[str, Any]
    map_limits: dict[str, int]


class Compiler:
    """Turns specs into uniquely named tasks added to a ``Flow``, plus reference functions."""

    def __init__(self) -> None:
        self._counter = 0
        self.signal_payloads: dict[str, Any] = {}
        self.map_limits: dict[str, int] = {}

    def compile(self, steps: tuple[StepSpec, ...]) -> Compiled:
        flow = Flow("prop")
        reference = self._steps(flow, steps)
        return Compiled(flow.build(), reference, self.signal_payloads, self.map_limits)

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _task(self, fn: Callable[[Any], Any], retry: RetryPolicy | None = None) -> Ref:
        return task(self._name("t"), retries=retry)(fn)

    def _arith(self, spec: ArithSpec) -> Ref:
        a, b = spec.a, spec.b
        return self._task(lambda x: (norm(x) * a + b) % MODULUS, spec.retry)

    def _steps(self, flow: Flow, steps: tuple[StepSpec, ...]) -> Ref:
        return chain([self._step(flow, step) for step in steps])

    def _step(self, flow: Flow, spec: StepSpec) -> Ref:
        if isinstance(spec, ArithSpec):
            fn = self._arith(spec)
            flow.then(fn)
            return fn
        if isinstance(spec, ForkSpec):
            return self._fork(flow, spec)
        if isinstance(spec, RouteSpec):
            return self._route(flow, spec)
        if isinstance(spec, LoopSpec):
            return self._loop(flow, spec)
        if isinstance(spec, MapSpec):
            return self._map(flow, spec)
        if isinstance(spec, DelaySpec):
            flow.delay(self._name("delay"), spec.seconds)
            return lambda value: value
        if isinstance(spec, SignalSpec):
            node_id = self._name("signal")
            flow.wait_for_signal(spec.signal_name, name=node_id, timeout=spec.timeout)
            self.signal_payloads[node_id] = spec.payload
            payload = spec.payload
            return lambda _value: payload
        child = Flow(self._name("child"))
        reference = self._steps(child, spec.steps)
        flow.then_flow(child.build())
        return reference

    def _fork(self, flow: Flow, spec: ForkSpec) -> Ref:
        branches = [[self._arith(s) for s in branch] for branch in spec.branches]
        first_ids = [_task_id(branch[0]) for branch in branches]

        def join(results: dict[str, Any]) -> int:
            assert set(results) == set(first_ids), results
            return sum((i + 1) * norm(results[key]) for i, key in enumerate(first_ids)) % MODULUS

        join_task = self._task(join)
        builder = flow.fork()
        for branch in branches:
            builder.branch(*branch)
        builder.join(join_task)
        branch_refs = [chain(branch) for branch in branches]

        def reference(value: Any) -> Any:
            outputs = {key: ref(value) for key, ref in zip(first_ids, branch_refs, strict=True)}
            return join_task(outputs)

        return reference

    def _route(self, flow: Flow, spec: RouteSpec) -> Ref:
        route_id = self._name("route")
        other_every = spec.other_every

        def key_fn(value: Any) -> str:
            n = norm(value)
            if other_every is not None and n % other_every == 0:
                return "other"
            return "even" if n % 2 == 0 else "odd"

        builder = flow.route(key_fn, keys=["even", "odd"], name=route_id)
        chains: dict[str, Ref] = {}
        for key, tasks in (("even", spec.even), ("odd", spec.odd)):
            if tasks is not None:
                fns = [self._arith(s) for s in tasks]
                builder.branch(key, *fns)
                chains[key] = chain(fns)
        default: Ref | None = None
        if spec.default is not None:
            fns = [self._arith(s) for s in spec.default]
            builder.default_branch(*fns)
            default = chain(fns)
        builder.done()

        def reference(value: Any) -> Any:
            key = key_fn(value)
            branch = chains.get(key, default)
            if branch is None:
                raise ReferenceFailureError("workflow", f"{route_id}::key_fn", "ValueError")
            return {"branch": key, "result": branch(value)}

        return reference

    def _loop(self, flow: Flow, spec: LoopSpec) -> Ref:
        body_id = self._name("t")
        a, b, count, wire = spec.body.a, spec.body.b, spec.count, spec.wire

        def body(value: Any) -> Any:
            if isinstance(value, dict) and value.get("loop") == body_id:
                iteration, acc = value["iteration"], value["acc"]
            else:
                iteration, acc = 0, norm(value)
            iteration, acc = iteration + 1, (acc * a + b) % MODULUS
            result: LoopResult[Any] = (
                LoopResult.done(acc)
                if iteration >= count
                else LoopResult.again({"loop": body_id, "iteration": iteration, "acc": acc})
            )
            return result.to_dict() if wire else result

        body_task = task(body_id, retries=spec.body.retry)(body)
        flow.loop(body_task, max_iterations=spec.max_iterations, on_max=spec.on_max)

        def reference(value: Any) -> Any:
            for _ in range(spec.max_iterations):
                result = body_task(value)
                tag, value = (
                    (result["_loop"], result["value"])
                    if isinstance(result, dict)
                    else ("done" if result.is_done else "again", result.value)
                )
                if tag == "done":
                    return value
            if spec.on_max == "exit_with_last":
                return value
            raise ReferenceFailureError("workflow", body_id, "MaxIterationsExceeded")

        return reference

    def _map(self, flow: Flow, spec: MapSpec) -> Ref:
        length = spec.length
        make_list = self._task(lambda x: [(norm(x) + 7 * j) % MODULUS for j in range(length)])
        item = self._arith(spec.item)
        flow.then(make_list).map(item, max_concurrency=spec.max_concurrency)
        if spec.max_concurrency is not None:
            self.map_limits[_task_id(item)] = spec.max_concurrency
        return lambda value: [item(x) for x in make_list(value)]


def _task_id(fn: Ref) -> str:
    spec = task_spec(fn)
    assert spec is not None
    return spec.task_id


def reference_outcome(compiled: Compiled, input_value: Any) -> Outcome:
    try:
        return ("completed", compiled.reference(input_value))
    except ReferenceFailureError as failure:
        return failure.outcome


# -- the driver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chaos:
    """How hostile a schedule is; all zero is an orderly, uninterrupted run."""

    crashes: int = 0
    pauses: int = 0
    failure_rate: float = 0.0
    persist_rate: float = 1.0


ORDERLY = Chaos()


class Driver:
    """Runs one instance like a runtime would, checking the machine's promises as it goes."""

    def __init__(
        self,
        compiled: Compiled,
        input_value: Any,
        *,
        seed: int = 0,
        chaos: Chaos = ORDERLY,
        initial: Snapshot | None = None,
        incremental: bool = False,
    ) -> None:
        self.workflow = compiled.workflow
        # Incremental: the machine hears what runs already (and asks only for new steps)
        # and keeps a cache between events, as the runtime's runner does.
        self.incremental = incremental
        self.cache = FrontierCache()
        self.compiled = compiled
        self.chaos = chaos
        self.rng = random.Random(seed)
        self.now = 0.0
        self.persisted = initial if initial is not None else start(input_value)
        self.snapshot = self.persisted
        # Failed attempts per step key, and when its next attempt is due, along the
        # history of the current snapshot (so a crash rolls them back too).
        self.failures: dict[str, int] = {}
        self.retry_due: dict[str, float] = {}
        self.persisted_failures: dict[str, int] = {}
        self.persisted_retry_due: dict[str, float] = {}
        self.in_flight: dict[str, RunTask] = {}
        self.wakes: dict[str, WakeAt] = {}
        self.awaiting: dict[str, AwaitSignal] = {}
        self.zombies: list[RunTask] = []
        self.crashes_left = chaos.crashes
        self.pauses_left = chaos.pauses
        self.inputs_seen: dict[str, Any] = {}
        self.history: list[Snapshot] = [self.persisted]

    # -- running -------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.apply(Tick(self.now))
        for _ in range(MAX_EVENTS):
            if self.persisted.status.is_terminal:
                return self.outcome(self.persisted)
            self.step()
        raise AssertionError(f"no outcome after {MAX_EVENTS} events: {self.snapshot}")

    def step(self) -> None:
        if self.snapshot.status.is_terminal:
            if self.crashes_left and self.rng.random() < 0.3:
                self.crash()  # the final transition itself may be lost
            else:
                self.commit()
            return
        actions: list[Callable[[], None]] = []
        if self.in_flight:
            actions += [self.finish_task] * 4
        if self.snapshot.status == Status.PAUSED:
            actions.append(self.unpause)
        else:
            if self.awaiting:
                actions.append(self.deliver_signal)
            if self.timer_due_times():
                actions.append(self.advance_clock)
            if self.pauses_left:
                actions.append(self.pause)
            actions.append(self.spurious_tick)
        if self.zombies:
            actions.append(self.finish_zombie)
        if self.crashes_left:
            actions.append(self.crash)
        if self.chaos == ORDERLY:
            actions[0]()  # tasks first, then signals, then the clock: one fixed order
        else:
            self.rng.choice(actions)()

    def finish_task(self) -> None:
        keys = sorted(self.in_flight)
        key = keys[0] if self.chaos == ORDERLY else self.rng.choice(keys)
        command = self.in_flight.pop(key)
        self.tick_clock()
        policy = command.task.metadata.retries
        if (
            policy is not None
            and command.attempt <= policy.max_retries
            and self.rng.random() < self.chaos.failure_rate
        ):
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            sample = self.rng.random()
            self.retry_due[key] = self.now + policy.delay_before_retry(failures, sample)
            error = ErrorInfo("ConnectionError", "flaky", task_id_of_key(key))
            self.apply(TaskFailed(key, error, True, self.now, jitter_sample=sample))
            return
        self.apply(TaskCompleted(key, command.task.fn(command.input), self.now))

    def finish_zombie(self) -> None:
        command = self.zombies.pop(self.rng.randrange(len(self.zombies)))
        self.apply(TaskCompleted(command.key, command.task.fn(command.input), self.now))

    def deliver_signal(self) -> None:
        keys = sorted(self.awaiting)
        key = keys[0] if self.chaos == ORDERLY else self.rng.choice(keys)
        self.tick_clock()
        self.apply(SignalReceived(key, self.compiled.signal_payloads[key], self.now))

    def timer_due_times(self) -> list[float]:
        return [w.when for w in self.wakes.values() if w.reason != "signal_timeout"]

    def advance_clock(self) -> None:
        self.now = max(self.now, min(self.timer_due_times()))
        self.apply(Tick(self.now))

    def spurious_tick(self) -> None:
        self.tick_clock()
        self.apply(Tick(self.now))

    def pause(self) -> None:
        self.pauses_left -= 1
        self.apply(PauseRequested())

    def unpause(self) -> None:
        self.tick_clock()
        self.apply(Unpaused(self.now))

    def crash(self) -> None:
        self.crashes_left -= 1
        self.zombies += self.in_flight.values()
        self.snapshot = self.persisted
        self.failures = dict(self.persisted_failures)
        self.retry_due = dict(self.persisted_retry_due)
        self.in_flight, self.wakes, self.awaiting = {}, {}, {}
        self.cache = FrontierCache()  # a new process: nothing of the old one survives
        self.now += self.rng.uniform(0, 2)
        self.apply(Tick(self.now))

    def tick_clock(self) -> None:
        if self.chaos != ORDERLY:
            self.now += self.rng.choice([0.0, 0.1, 0.7])

    # -- applying events and checking the commands ---------------------------------------

    def apply(self, event: Event) -> None:
        if self.incremental:
            snapshot, commands = advance(
                self.workflow, self.snapshot, event, running=self.in_flight, cache=self.cache
            )
        else:
            snapshot, commands = advance(self.workflow, self.snapshot, event)
        self.check_commands(snapshot, commands, getattr(event, "now", None))
        self.snapshot = snapshot
        if snapshot.status == Status.PAUSED:
            self.wakes, self.awaiting = {}, {}  # started tasks keep running while paused
        elif self.incremental:
            runs = {c.key: c for c in commands if isinstance(c, RunTask)}
            assert not runs.keys() & self.in_flight.keys(), "a running step was asked for"
            self.in_flight.update(runs)  # the same dict: the machine's view of what runs
            self.wakes = {c.key: c for c in commands if isinstance(c, WakeAt)}
            self.awaiting = {c.key: c for c in commands if isinstance(c, AwaitSignal)}
        else:
            self.in_flight = {c.key: c for c in commands if isinstance(c, RunTask)}
            self.wakes = {c.key: c for c in commands if isinstance(c, WakeAt)}
            self.awaiting = {c.key: c for c in commands if isinstance(c, AwaitSignal)}
        if not snapshot.status.is_terminal and self.rng.random() < self.chaos.persist_rate:
            self.commit()

    def commit(self) -> None:
        for key, value in self.persisted.results.items():
            assert self.snapshot.results.get(key, ...) == value, f"checkpoint {key!r} changed"
        self.persisted = self.snapshot
        self.persisted_failures = dict(self.failures)
        self.persisted_retry_due = dict(self.retry_due)
        self.history.append(self.snapshot)

    def check_commands(
        self, snapshot: Snapshot, commands: list[Command], now: float | None
    ) -> None:
        runs = [c for c in commands if isinstance(c, RunTask)]
        if snapshot.status.is_terminal or snapshot.status == Status.PAUSED:
            assert not runs, commands
        for command in runs:
            key = command.key
            # (b) a checkpointed step is never issued again
            assert key not in self.persisted.results, f"{key!r} re-run after its checkpoint"
            assert key not in snapshot.results, f"{key!r} issued although checkpointed"
            # (c) the attempt number counts the failures along this history, no more
            assert command.attempt == 1 + self.failures.get(key, 0), (key, command.attempt)
            policy = command.task.metadata.retries
            assert command.attempt <= 1 + (policy.max_retries if policy else 0)
            if command.attempt > 1:  # a retry never starts before its back-off is over
                assert now is not None
                assert now >= self.retry_due[key], (key, now, self.retry_due[key])
            assert command.task is self.workflow.tasks[task_id_of_key(key)]
            # a step always sees the same input, however often it is issued
            if key in self.inputs_seen:
                assert self.inputs_seen[key] == command.input, key
            self.inputs_seen[key] = command.input
        # (a zombie may have finished a step that runs again here: that one is done)
        running = [key for key in self.in_flight if key not in snapshot.results]
        running = running if self.incremental else []
        for fn_id, limit in self.compiled.map_limits.items():
            started = [
                key for key in [c.key for c in runs] + running if key.startswith(f"{fn_id}[")
            ]
            assert len(started) <= limit, (fn_id, limit, started)
        expected_status = (
            Status.RUNNING
            if runs or running
            else Status.AWAITING_SIGNAL
            if any(isinstance(c, AwaitSignal) for c in commands)
            else None
        )
        settled = snapshot.status.is_terminal or snapshot.status == Status.PAUSED
        if expected_status is not None and not settled:
            assert snapshot.status == expected_status, (snapshot.status, commands)

    @staticmethod
    def outcome(snapshot: Snapshot) -> Outcome:
        if snapshot.status == Status.COMPLETED:
            return ("completed", snapshot.output)
        assert snapshot.status == Status.FAILED, snapshot.status
        error = snapshot.error
        assert error is not None
        return ("failed", error.kind, error.task_id, error.error_type)


# -- properties --------------------------------------------------------------------------------

chaos_levels = st.builds(
    Chaos,
    crashes=st.integers(0, 6),
    pauses=st.integers(0, 2),
    failure_rate=st.sampled_from([0.0, 0.2, 0.5]),
    persist_rate=st.sampled_from([0.3, 0.7, 1.0]),
)
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(spec=workflow_specs, input_value=inputs)
def test_orderly_run_matches_the_reference_interpreter(
    spec: tuple[StepSpec, ...], input_value: int
) -> None:
    compiled = Compiler().compile(spec)
    assert Driver(compiled, input_value).run() == reference_outcome(compiled, input_value)


@PROPERTY_SETTINGS
@given(spec=workflow_specs, input_value=inputs, seed=seeds, chaos=chaos_levels)
def test_crashes_and_schedules_do_not_change_the_outcome(
    spec: tuple[StepSpec, ...], input_value: int, seed: int, chaos: Chaos
) -> None:
    compiled = Compiler().compile(spec)
    orderly = Driver(compiled, input_value).run()
    assert orderly == reference_outcome(compiled, input_value)
    chaotic = Driver(compiled, input_value, seed=seed, chaos=chaos)
    assert chaotic.run() == orderly


@PROPERTY_SETTINGS
@given(spec=workflow_specs, input_value=inputs, seed=seeds, chaos=chaos_levels)
def test_a_driver_with_a_frontier_cache_gets_the_same_outcome(
    spec: tuple[StepSpec, ...], input_value: int, seed: int, chaos: Chaos
) -> None:
    compiled = Compiler().compile(spec)
    expected = reference_outcome(compiled, input_value)
    assert Driver(compiled, input_value, incremental=True).run() == expected
    chaotic = Driver(compiled, input_value, seed=seed, chaos=chaos, incremental=True)
    assert chaotic.run() == expected


@PROPERTY_SETTINGS
@given(spec=workflow_specs, input_value=inputs, data=st.data())
def test_resuming_from_any_persisted_snapshot_finishes_the_same(
    spec: tuple[StepSpec, ...], input_value: int, data: st.DataObject
) -> None:
    compiled = Compiler().compile(spec)
    orderly = Driver(compiled, input_value)
    outcome = orderly.run()
    resume_point = data.draw(st.sampled_from(orderly.history), label="resume point")
    # The driver checks that nothing checkpointed in the resume point is issued again.
    assert Driver(compiled, input_value, initial=resume_point).run() == outcome


def test_driver_notices_a_machine_that_forgets_a_checkpoint() -> None:
    """The checks above can fail: a snapshot that drops a result is caught."""
    compiled = Compiler().compile((ArithSpec(2, 1, None), ArithSpec(3, 0, None)))
    driver = Driver(compiled, 5)
    driver.apply(Tick(0.0))
    (first,) = driver.in_flight.values()
    driver.apply(TaskCompleted(first.key, first.task.fn(first.input), 0.0))
    forgetful = dataclasses.replace(driver.snapshot, results={})
    with pytest.raises(AssertionError, match="re-run after its checkpoint"):
        driver.check_commands(forgetful, [first], 0.0)


def test_every_node_kind_appears_in_generated_workflows() -> None:
    """Guard against a generator that silently stops producing some node kinds."""
    seen: set[str] = set()

    @settings(max_examples=300, database=None, deadline=None)
    @given(workflow_specs)
    def collect(spec: tuple[StepSpec, ...]) -> None:
        def visit(steps: tuple[StepSpec, ...]) -> None:
            for step in steps:
                seen.add(type(step).__name__)
                if isinstance(step, ChildSpec):
                    visit(step.steps)

        visit(spec)

    collect()
    expected = {
        cls.__name__
        for cls in (
            ArithSpec,
            ForkSpec,
            RouteSpec,
            LoopSpec,
            MapSpec,
            DelaySpec,
            SignalSpec,
            ChildSpec,
        )
    }
    assert seen == expected
