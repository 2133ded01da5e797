"""Example-based tests of the pure state machine, one node kind at a time."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import sayiir_core
from sayiir_core.machine import (
    AwaitSignal,
    CancelRequested,
    Command,
    Complete,
    ErrorInfo,
    Event,
    Fail,
    PauseRequested,
    RunTask,
    SignalReceived,
    SignalTimedOut,
    Snapshot,
    TaskCompleted,
    TaskFailed,
    Tick,
    Unpaused,
    WakeAt,
    advance,
    loop_iteration_key,
    map_item_key,
    start,
    task_id_of_key,
)
from sayiir_core.status import Status
from sayiir_core.workflow import Flow, LoopResult, RetryPolicy, Workflow, task

BOOM = ErrorInfo("RuntimeError", "boom", "flaky")


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def square(x: int) -> int:
    return x * x


def neg(x: int) -> int:
    return -x


def collect(results: dict[str, Any]) -> dict[str, Any]:
    return results


def parity(x: int) -> str:
    return "even" if x % 2 == 0 else "odd"


def body(x: int) -> LoopResult[int]:
    return LoopResult.again(x + 1)


def identity(x: Any) -> Any:
    return x


@task("flaky", retries=RetryPolicy(max_retries=2, initial_delay_secs=1.0, backoff_multiplier=2.0))
def flaky(x: int) -> int:
    return x


class Run:
    """A workflow instance driven by hand, one event at a time."""

    def __init__(self, workflow: Workflow, input_value: Any, now: float = 0.0) -> None:
        self.workflow = workflow
        self.snapshot = start(input_value)
        self.commands: list[Command] = []
        self.send(Tick(now))

    def send(self, event: Event) -> list[Command]:
        self.snapshot, self.commands = advance(self.workflow, self.snapshot, event)
        return self.commands

    def complete(self, key: str, output: Any, now: float = 0.0) -> list[Command]:
        return self.send(TaskCompleted(key, output, now))

    def fail(self, key: str, *, retryable: bool = True, now: float = 0.0) -> list[Command]:
        return self.send(TaskFailed(key, BOOM, retryable, now))

    def status(self) -> Status:
        return self.snapshot.status

    def runs(self) -> dict[str, RunTask]:
        return {c.key: c for c in self.commands if isinstance(c, RunTask)}

    def only_run(self) -> RunTask:
        runs = self.runs()
        assert len(runs) == 1, self.commands
        return next(iter(runs.values()))

    def execute(self, key: str, now: float = 0.0) -> list[Command]:
        """Run the task really, as a worker would, and report its output."""
        command = self.runs()[key]
        return self.complete(key, command.task.fn(command.input), now)

    def execute_all(self, now: float = 0.0) -> None:
        while runs := self.runs():
            for key in list(runs):
                self.execute(key, now)


# -- helpers that name step keys --------------------------------------------------------------


def test_step_key_helpers() -> None:
    assert loop_iteration_key("body", 3) == "body#3"
    assert map_item_key("fetch", 7) == "fetch[7]"
    assert task_id_of_key("body#3") == "body"
    assert task_id_of_key("fetch[7]") == "fetch"
    assert task_id_of_key("plain") == "plain"
    assert task_id_of_key("fetch__1[7]") == "fetch__1"  # a repeated step's items
    assert task_id_of_key("branch_0::key_fn") == "branch_0::key_fn"
    assert start({"a": 1}) == Snapshot(input={"a": 1})


def _sayiir_imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module is not None
        and node.module.startswith("sayiir_core")
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("sayiir_core")
    }


def test_status_and_the_key_formats_import_nothing_of_the_package() -> None:
    # status.py (Status, WorkflowStatus, ErrorInfo) sits below the machine and the
    # backends; machine/keys.py is what backends and runtime read step keys with.
    package = Path(sayiir_core.__file__).parent
    assert _sayiir_imports(package / "status.py") == set()
    assert _sayiir_imports(package / "machine" / "keys.py") == set()


def test_error_info_round_trips_with_and_without_a_traceback() -> None:
    with_frames = ErrorInfo("ValueError", "bad", "t", "task", "Traceback (most recent ...")
    assert ErrorInfo.from_dict(with_frames.to_dict()) == with_frames
    assert with_frames.full_text() == "ValueError: bad\n\nTraceback (most recent ..."
    assert str(with_frames) == "ValueError: bad"
    assert "traceback" not in BOOM.to_dict()  # rows written before tracebacks were kept
    assert ErrorInfo.from_dict(BOOM.to_dict()) == BOOM
    assert BOOM.full_text() == str(BOOM)


# -- chain --------------------------------------------------------------------------------------


def test_chain_runs_one_task_after_another() -> None:
    wf = Flow("chain").then(inc).then(double).build()
    run = Run(wf, 5)
    assert run.status() == Status.RUNNING
    assert run.commands == [RunTask("inc", wf.tasks["inc"], 5, 1)]
    assert dict(run.snapshot.results) == {}

    assert run.complete("inc", 6) == [RunTask("double", wf.tasks["double"], 6, 1)]
    assert dict(run.snapshot.results) == {"inc": 6}

    assert run.complete("double", 12) == [Complete(12)]
    assert run.status() == Status.COMPLETED
    assert run.snapshot.output == 12


def test_advance_does_not_mutate_the_old_snapshot() -> None:
    wf = Flow("chain").then(inc).then(double).build()
    run = Run(wf, 5)
    before = run.snapshot
    run.complete("inc", 6)
    assert dict(before.results) == {}
    assert before.status == Status.RUNNING
    with pytest.raises(TypeError):
        run.snapshot.results["inc"] = 0  # type: ignore[index]


def test_resume_from_a_snapshot_is_the_same_walk() -> None:
    wf = Flow("chain").then(inc).then(double).then(square).build()
    run = Run(wf, 1)
    run.complete("inc", 2)
    persisted = run.snapshot
    run.complete("double", 4)  # this transition is "lost" in a crash

    resumed, commands = advance(wf, persisted, Tick(100.0))
    assert commands == [RunTask("double", wf.tasks["double"], 2, 1)]
    assert dict(resumed.results) == {"inc": 2}


def test_duplicate_completion_does_not_overwrite_a_checkpoint() -> None:
    wf = Flow("chain").then(inc).then(double).build()
    run = Run(wf, 1)
    run.complete("inc", 2)
    assert run.complete("inc", 999) == [RunTask("double", wf.tasks["double"], 2, 1)]
    assert run.snapshot.results["inc"] == 2


# -- fork / join --------------------------------------------------------------------------------


def test_fork_runs_branches_in_parallel_and_joins_by_first_task_id() -> None:
    wf = (
        Flow("fork")
        .fork()
        .branch(inc, square, name="first")
        .branch(double)
        .branch(neg)
        .join(collect)
        .build()
    )
    run = Run(wf, 3)
    assert set(run.runs()) == {"first", "double", "neg"}
    assert all(command.input == 3 for command in run.runs().values())

    run.complete("double", 6)
    assert set(run.runs()) == {"first", "neg"}  # still running, re-reported, no join yet

    run.complete("first", 4)
    assert set(run.runs()) == {"square", "neg"}
    assert run.runs()["square"].input == 4

    run.complete("square", 16)
    run.complete("neg", -3)
    join = run.only_run()
    assert join.key == "collect"
    assert join.input == {"first": 16, "double": 6, "neg": -3}

    assert run.complete("collect", "joined") == [Complete("joined")]


def test_fork_output_feeds_the_next_step() -> None:
    wf = Flow("fork").fork([inc, double]).join(collect).then(identity).build()
    run = Run(wf, 10)
    run.execute_all()
    assert run.commands == [Complete({"inc": 11, "double": 20})]


# -- route --------------------------------------------------------------------------------------


def routed(*, default: bool = False) -> Workflow:
    builder = Flow("route").route(parity, keys=["even", "odd"]).branch("even", double)
    if default:
        builder.default_branch(neg)
    else:
        builder.branch("odd", inc, square)
    return builder.done().then(identity).build()


def test_route_runs_the_chosen_branch_on_the_route_input() -> None:
    wf = routed()
    run = Run(wf, 3)
    key_run = run.only_run()
    assert key_run.key == "branch_0::key_fn"
    assert key_run.input == 3

    run.complete("branch_0::key_fn", "odd")
    assert run.only_run() == RunTask("inc", wf.tasks["inc"], 3, 1)
    run.complete("inc", 4)
    run.complete("square", 16)
    assert run.only_run() == RunTask(
        "identity", wf.tasks["identity"], {"branch": "odd", "result": 16}, 1
    )


def test_route_unknown_key_takes_the_default_branch() -> None:
    run = Run(routed(default=True), 3)
    run.complete("branch_0::key_fn", "something-else")
    assert run.only_run().key == "neg"
    run.complete("neg", -3)
    assert run.only_run().input == {"branch": "something-else", "result": -3}


@pytest.mark.parametrize("key", ["zero", 1, None])
def test_route_key_without_branch_or_default_fails(key: object) -> None:
    run = Run(routed(), 3)
    commands = run.complete("branch_0::key_fn", key)
    assert run.status() == Status.FAILED
    assert len(commands) == 1
    assert isinstance(commands[0], Fail)
    error = commands[0].error
    assert error.kind == "workflow"
    assert error.task_id == "branch_0::key_fn"
    assert run.snapshot.error == error


# -- loop ---------------------------------------------------------------------------------------


def test_loop_iterates_until_done() -> None:
    wf = Flow("loop").loop(body, max_iterations=5).then(identity).build()
    run = Run(wf, 0)
    assert run.only_run() == RunTask("body#0", wf.tasks["body"], 0, 1)
    run.complete("body#0", LoopResult.again(10))
    assert run.only_run() == RunTask("body#1", wf.tasks["body"], 10, 1)
    run.complete("body#1", {"_loop": "again", "value": 20})  # the wire form works too
    assert run.only_run().key == "body#2"
    assert run.only_run().input == 20
    run.complete("body#2", LoopResult.done("finished"))
    assert run.only_run() == RunTask("identity", wf.tasks["identity"], "finished", 1)
    assert set(run.snapshot.results) == {"body#0", "body#1", "body#2"}


def test_loop_max_iterations_fails_by_default() -> None:
    run = Run(Flow("loop").loop(body, max_iterations=2).build(), 0)
    run.complete("body#0", LoopResult.again(1))
    commands = run.complete("body#1", LoopResult.again(2))
    assert run.status() == Status.FAILED
    assert isinstance(commands[0], Fail)
    assert commands[0].error.kind == "workflow"
    assert commands[0].error.error_type == "MaxIterationsExceeded"
    assert commands[0].error.task_id == "body"


def test_loop_max_iterations_can_exit_with_the_last_value() -> None:
    wf = Flow("loop").loop(body, max_iterations=2, on_max="exit_with_last").build()
    run = Run(wf, 0)
    run.execute_all()
    assert run.commands == [Complete(2)]
    assert set(run.snapshot.results) == {"body#0", "body#1"}


@pytest.mark.parametrize("output", [5, None, {"_loop": "maybe", "value": 1}, {"value": 1}])
def test_loop_body_must_return_a_loop_result(output: object) -> None:
    run = Run(Flow("loop").loop(body).build(), 0)
    commands = run.complete("body#0", output)
    assert run.status() == Status.FAILED
    assert isinstance(commands[0], Fail)
    assert commands[0].error.kind == "workflow"
    assert commands[0].error.task_id == "body"


# -- map ----------------------------------------------------------------------------------------


def test_map_keeps_input_order() -> None:
    wf = Flow("map").map(square).build()
    run = Run(wf, [3, 1, 2])
    assert run.commands == [
        RunTask("square[0]", wf.tasks["square"], 3, 1),
        RunTask("square[1]", wf.tasks["square"], 1, 1),
        RunTask("square[2]", wf.tasks["square"], 2, 1),
    ]
    run.complete("square[2]", 4)
    run.complete("square[0]", 9)
    assert set(run.runs()) == {"square[1]"}
    assert run.complete("square[1]", 1) == [Complete([9, 1, 4])]


def test_map_max_concurrency_limits_running_items() -> None:
    wf = Flow("map").map(square, max_concurrency=2).build()
    run = Run(wf, [1, 2, 3, 4, 5])
    assert list(run.runs()) == ["square[0]", "square[1]"]
    run.complete("square[1]", 4)
    assert list(run.runs()) == ["square[0]", "square[2]"]
    run.complete("square[0]", 1)
    assert list(run.runs()) == ["square[2]", "square[3]"]
    run.execute_all()
    assert run.commands == [Complete([1, 4, 9, 16, 25])]


def test_map_over_an_empty_list_moves_on() -> None:
    wf = Flow("map").map(square).then(identity).build()
    run = Run(wf, [])
    assert run.only_run() == RunTask("identity", wf.tasks["identity"], [], 1)


@pytest.mark.parametrize("value", [5, (1, 2), {"a": 1}, "abc", None])
def test_map_needs_a_list_input(value: object) -> None:
    run = Run(Flow("map").map(square).build(), value)
    assert run.status() == Status.FAILED
    assert isinstance(run.commands[0], Fail)
    assert run.commands[0].error.kind == "workflow"
    assert run.commands[0].error.task_id == "square"


# -- child flow ---------------------------------------------------------------------------------


def test_child_flow_is_walked_inline() -> None:
    child = Flow("child").then(double).then(square).build()
    wf = Flow("parent").then(inc).then_flow(child).then(neg).build()
    run = Run(wf, 2)
    run.complete("inc", 3)
    assert run.only_run() == RunTask("double", wf.tasks["double"], 3, 1)
    run.execute_all()
    assert run.commands == [Complete(-36)]
    assert dict(run.snapshot.results) == {"inc": 3, "double": 6, "square": 36, "neg": -36}


# -- delay --------------------------------------------------------------------------------------


def test_delay_waits_then_passes_the_input_through() -> None:
    wf = Flow("delay").then(inc).delay("cool_off", "1m").then(double).build()
    run = Run(wf, 1, now=0.0)
    run.complete("inc", 2, now=100.0)
    assert run.commands == [WakeAt("cool_off", 160.0, "delay")]
    assert run.status() == Status.WAITING
    assert run.snapshot.timers == {"cool_off": 160.0}

    assert run.send(Tick(159.9)) == [WakeAt("cool_off", 160.0, "delay")]  # not re-armed

    assert run.send(Tick(160.0)) == [RunTask("double", wf.tasks["double"], 2, 1)]
    assert "cool_off" in run.snapshot.results
    assert dict(run.snapshot.timers) == {}


def test_delay_resumed_late_is_already_over() -> None:
    wf = Flow("delay").delay("cool_off", 60).then(double).build()
    run = Run(wf, 4, now=0.0)
    waiting = run.snapshot
    _, commands = advance(wf, waiting, Tick(1000.0))  # resumed long after a crash
    assert commands == [RunTask("double", wf.tasks["double"], 4, 1)]


def test_zero_delay_does_not_wait() -> None:
    wf = Flow("delay").delay("now", 0).then(double).build()
    run = Run(wf, 4, now=5.0)
    assert run.commands == [RunTask("double", wf.tasks["double"], 4, 1)]


# -- signals ------------------------------------------------------------------------------------


def test_signal_payload_becomes_the_value() -> None:
    wf = Flow("signal").then(inc).wait_for_signal("approved").then(identity).build()
    run = Run(wf, 1)
    assert run.complete("inc", 2) == [AwaitSignal("approved", "approved", None)]
    assert run.status() == Status.AWAITING_SIGNAL
    assert run.send(Tick(50.0)) == [AwaitSignal("approved", "approved", None)]

    run.send(SignalReceived("approved", {"by": "alice"}, now=60.0))
    assert run.only_run() == RunTask("identity", wf.tasks["identity"], {"by": "alice"}, 1)


def test_named_signal_wait_uses_its_name_as_key() -> None:
    wf = Flow("signal").wait_for_signal("approved", name="second_approval").build()
    run = Run(wf, None)
    assert run.commands == [AwaitSignal("second_approval", "approved", None)]
    assert run.send(SignalReceived("second_approval", 7, now=1.0)) == [Complete(7)]


def test_signal_timeout_fails_with_signal_timeout() -> None:
    wf = Flow("signal").wait_for_signal("approved", timeout="1m").build()
    run = Run(wf, None, now=10.0)
    assert run.commands == [
        AwaitSignal("approved", "approved", 70.0),
        WakeAt("approved", 70.0, "signal_timeout"),
    ]
    assert run.send(Tick(69.0))[0] == AwaitSignal("approved", "approved", 70.0)  # deadline kept

    # Past the deadline the wait stands until the driver has looked for a buffered signal.
    assert run.send(Tick(70.0))[0] == AwaitSignal("approved", "approved", 70.0)
    commands = run.send(SignalTimedOut("approved", now=70.0))
    assert run.status() == Status.FAILED
    assert isinstance(commands[0], Fail)
    assert commands[0].error.kind == "signal_timeout"
    assert commands[0].error.error_type == "SignalTimeoutError"
    assert commands[0].error.task_id == "approved"


def test_signal_buffered_in_time_wins_over_a_late_resume() -> None:
    wf = Flow("signal").wait_for_signal("approved", timeout=60).build()
    run = Run(wf, None, now=0.0)
    run.send(Tick(500.0))  # nobody ran the instance until long after the deadline
    assert run.send(SignalReceived("approved", "yes", now=500.0)) == [Complete("yes")]


def test_signal_before_the_deadline_wins() -> None:
    wf = Flow("signal").wait_for_signal("approved", timeout=60).build()
    run = Run(wf, None, now=0.0)
    assert run.send(SignalReceived("approved", "yes", now=59.0)) == [Complete("yes")]
    assert dict(run.snapshot.timers) == {}


# -- retries ------------------------------------------------------------------------------------


def test_failed_attempt_is_retried_after_backoff() -> None:
    wf = Flow("retry").then(flaky).build()
    run = Run(wf, 1)
    assert run.only_run().attempt == 1

    assert run.fail("flaky", now=10.0) == [WakeAt("flaky", 11.0, "retry")]
    assert run.status() == Status.WAITING
    assert run.snapshot.attempts == {"flaky": 1}
    assert run.send(Tick(10.5)) == [WakeAt("flaky", 11.0, "retry")]
    assert run.send(Tick(11.0)) == [RunTask("flaky", wf.tasks["flaky"], 1, 2)]

    assert run.fail("flaky", now=20.0) == [WakeAt("flaky", 22.0, "retry")]  # doubled
    assert run.send(Tick(22.0)) == [RunTask("flaky", wf.tasks["flaky"], 1, 3)]

    commands = run.fail("flaky", now=30.0)  # max_retries=2: three attempts in all
    assert commands == [Fail(BOOM)]
    assert run.status() == Status.FAILED
    assert run.snapshot.error == BOOM


def test_success_after_a_retry_clears_the_retry_state() -> None:
    run = Run(Flow("retry").then(flaky).build(), 1)
    run.fail("flaky", now=0.0)
    run.send(Tick(1.0))
    assert run.complete("flaky", 1, now=2.0) == [Complete(1)]
    assert dict(run.snapshot.attempts) == {}
    assert dict(run.snapshot.retry_at) == {}


def test_retry_state_survives_a_crash_during_backoff() -> None:
    wf = Flow("retry").then(flaky).build()
    run = Run(wf, 1)
    run.fail("flaky", now=10.0)
    persisted = run.snapshot
    _, early = advance(wf, persisted, Tick(10.2))
    assert early == [WakeAt("flaky", 11.0, "retry")]
    _, due = advance(wf, persisted, Tick(12.0))
    assert due == [RunTask("flaky", wf.tasks["flaky"], 1, 2)]


def test_not_retryable_failure_fails_at_once() -> None:
    run = Run(Flow("retry").then(flaky).build(), 1)
    assert run.fail("flaky", retryable=False) == [Fail(BOOM)]
    assert run.status() == Status.FAILED


def test_task_without_policy_fails_at_once() -> None:
    run = Run(Flow("plain").then(inc).build(), 1)
    assert run.fail("inc") == [Fail(BOOM)]


def test_jitter_sample_moves_the_retry_time() -> None:
    @task("jittery", retries=RetryPolicy(initial_delay_secs=10.0, jitter=0.5))
    def jittery(x: int) -> int:
        return x

    run = Run(Flow("retry").then(jittery).build(), 1)
    run.send(TaskFailed("jittery", BOOM, True, now=100.0, jitter_sample=0.0))
    assert run.commands == [WakeAt("jittery", 105.0, "retry")]


def test_zero_backoff_retries_immediately() -> None:
    @task("eager", retries=RetryPolicy(max_retries=1, initial_delay_secs=0.0))
    def eager(x: int) -> int:
        return x

    wf = Flow("retry").then(eager).build()
    run = Run(wf, 1)
    assert run.fail("eager", now=5.0) == [RunTask("eager", wf.tasks["eager"], 1, 2)]


def test_map_items_and_loop_iterations_retry_with_their_task_policy() -> None:
    @task("item", retries=1)
    def item(x: int) -> int:
        return x

    @task("step", retries=1)
    def step(x: int) -> LoopResult[int]:
        return LoopResult.done(x)

    wf = Flow("retry").map(item).loop(step).build()
    run = Run(wf, [1, 2])
    run.fail("item[1]", now=0.0)
    assert set(run.runs()) == {"item[0]"}
    assert WakeAt("item[1]", 1.0, "retry") in run.commands
    run.send(Tick(1.0))
    assert run.runs()["item[1]"].attempt == 2
    assert run.runs()["item[0]"].attempt == 1

    run.execute("item[0]", now=1.0)
    run.execute("item[1]", now=1.0)
    assert run.only_run() == RunTask("step#0", wf.tasks["step"], [1, 2], 1)
    run.fail("step#0", now=2.0)
    run.send(Tick(3.0))
    assert run.only_run() == RunTask("step#0", wf.tasks["step"], [1, 2], 2)


def test_late_failure_of_a_completed_step_is_ignored() -> None:
    wf = Flow("retry").then(flaky).then(inc).build()
    run = Run(wf, 1)
    run.complete("flaky", 1)
    assert run.fail("flaky", retryable=False) == [RunTask("inc", wf.tasks["inc"], 1, 1)]
    assert run.status() == Status.RUNNING


def test_one_failing_fork_branch_fails_the_instance() -> None:
    run = Run(Flow("fork").fork([inc, double]).join(collect).build(), 1)
    run.complete("double", 2)
    assert run.fail("inc") == [Fail(BOOM)]
    assert run.status() == Status.FAILED


# -- cancel and pause ---------------------------------------------------------------------------


def test_cancel_stops_the_instance() -> None:
    run = Run(Flow("c").then(inc).then(double).build(), 1)
    assert run.send(CancelRequested()) == []
    assert run.status() == Status.CANCELLED
    cancelled = run.snapshot
    assert run.complete("inc", 2) == []
    assert run.snapshot is cancelled


def test_pause_holds_new_work_until_unpaused() -> None:
    wf = Flow("p").then(inc).then(double).build()
    run = Run(wf, 1)
    assert run.send(PauseRequested()) == []
    assert run.status() == Status.PAUSED

    # The running step may still finish; its checkpoint is kept, nothing new starts.
    assert run.complete("inc", 2) == []
    assert run.status() == Status.PAUSED
    assert run.snapshot.results == {"inc": 2}
    assert run.send(Tick(10.0)) == []

    assert run.send(Unpaused(now=20.0)) == [RunTask("double", wf.tasks["double"], 2, 1)]
    assert run.status() == Status.RUNNING


def test_pause_keeps_signals_and_failures() -> None:
    wf = Flow("p").wait_for_signal("go").then(flaky).build()
    run = Run(wf, None)
    run.send(PauseRequested())
    assert run.send(SignalReceived("go", 3, now=1.0)) == []
    assert run.snapshot.results == {"go": 3}
    assert run.send(Unpaused(now=2.0)) == [RunTask("flaky", wf.tasks["flaky"], 3, 1)]
    run.send(PauseRequested())
    assert run.fail("flaky", now=3.0) == []
    assert run.snapshot.attempts == {"flaky": 1}
    assert run.send(Unpaused(now=10.0)) == [RunTask("flaky", wf.tasks["flaky"], 3, 2)]


def test_cancel_while_paused() -> None:
    run = Run(Flow("p").then(inc).build(), 1)
    run.send(PauseRequested())
    run.send(CancelRequested())
    assert run.status() == Status.CANCELLED
    assert run.send(Unpaused(now=1.0)) == []
    assert run.status() == Status.CANCELLED


@pytest.mark.parametrize(
    "event",
    [
        Tick(1.0),
        TaskCompleted("inc", 5, 1.0),
        TaskFailed("inc", BOOM, False, 1.0),
        SignalReceived("inc", 1, 1.0),
        CancelRequested(),
        PauseRequested(),
        Unpaused(1.0),
    ],
)
@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_terminal_snapshots_ignore_every_event(event: Event, finish: str) -> None:
    run = Run(Flow("t").then(inc).build(), 1)
    if finish == "complete":
        run.complete("inc", 2)
        assert run.status() == Status.COMPLETED
    elif finish == "fail":
        run.fail("inc", retryable=False)
        assert run.status() == Status.FAILED
    else:
        run.send(CancelRequested())
        assert run.status() == Status.CANCELLED
    terminal = run.snapshot
    assert run.send(event) == []
    assert run.snapshot is terminal


# -- everything together ------------------------------------------------------------------------


def test_a_workflow_with_every_node_kind_runs_to_its_output() -> None:
    child = Flow("child").then(neg).build()

    def countdown(x: int) -> LoopResult[int]:
        return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)

    wf = (
        Flow("all")
        .then(inc)
        .fork([double, square])
        .join(lambda d: [d["double"], d["square"]])
        .map(inc, name="bump")
        .then(lambda xs: sum(xs), name="total")
        .route(parity, keys=["even", "odd"])
        .branch("even", lambda x: x // 2, name="halve")
        .branch("odd", lambda x: 3 * x + 1, name="triple")
        .done()
        .then(lambda r: r["result"] % 3, name="small")
        .loop(countdown)
        .then_flow(child)
        .delay("rest", 5)
        .wait_for_signal("go")
        .build()
    )
    run = Run(wf, 2, now=0.0)
    run.execute_all()
    # inc 3 -> {6, 9} -> [7, 10] -> 17 -> odd: 52 -> 1 -> loop to 3 -> -3 -> delay
    assert run.commands == [WakeAt("rest", 5.0, "delay")]
    assert run.snapshot.results["neg"] == -3
    assert run.send(Tick(5.0)) == [AwaitSignal("go", "go", None)]
    assert run.send(SignalReceived("go", "done", now=6.0)) == [Complete("done")]
