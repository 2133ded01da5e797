"""``run_workflow`` without persistence runs on the caller's own loop (issue 15).

A workflow of sync steps runs on an event loop private to the calling thread, each step
inline while it is all the run has to do. These pin that it does, and that the rest a
caller could see stays as it was: timeouts, parallel branches, errors and retries,
context variables, nested calls of the sync API, Ctrl-C and other signals, fds, fork.
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from sayiir_core import Flow, RetryPolicy, TaskError, TaskTimeoutError, Workflow, run_workflow, task
from sayiir_core.runtime import caller_loop as caller_loop_module
from sayiir_core.runtime.caller_loop import caller_loop
from sayiir_core.runtime.context import get_task_context
from sayiir_core.runtime.executor import LocalExecutor
from sayiir_core.runtime.in_memory import run_in_memory

# pytest-timeout's default method installs a SIGALRM handler, and with another signal
# handler than Ctrl-C's the main thread keeps the loop thread path (see caller_loop).
pytestmark = pytest.mark.timeout(120, method="thread")

WAIT = 10.0  # a bound on waits for other threads, never a timing assertion
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def chain(name: str, *steps: Callable[[Any], Any]) -> Workflow:
    flow = Flow(name)
    for i, step in enumerate(steps):
        flow = flow.then(step, name=f"step_{i}")
    return flow.build()


def thread_of_each_step(workflow_steps: int) -> tuple[int, list[threading.Thread]]:
    seen: list[threading.Thread] = []

    def note(x: int) -> int:
        seen.append(threading.current_thread())
        return x + 1

    output = run_workflow(chain("note", *[note] * workflow_steps), 0)
    return output, seen


def in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` on a new thread; its result or error comes back here."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((call(), None))
        except BaseException as error:
            outcome.append((None, error))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(WAIT)
    assert outcome, "the thread did not finish"
    value, error = outcome[0]
    if error is not None:
        raise error
    return value


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Other tests' threads may open or close an fd meanwhile; a leaked loop holds three (its
# epoll instance and self-pipe), so a leak per run or per thread is far above this.
SLACK_FDS = 5
needs_proc_fds = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc fds")


# -- where the steps run ----------------------------------------------------------------


def test_sync_steps_run_inline_on_the_calling_thread() -> None:
    output, seen = thread_of_each_step(5)
    assert output == 5
    assert seen == [threading.current_thread()] * 5


def test_also_on_a_thread_that_is_not_the_main_one() -> None:
    def run() -> tuple[threading.Thread, list[threading.Thread]]:
        return threading.current_thread(), thread_of_each_step(3)[1]

    caller, seen = in_thread(run)
    assert seen == [caller] * 3


def test_a_workflow_with_async_steps_still_runs_on_the_loop_thread() -> None:
    # An async step may use objects bound to the sayiir loop (a client's pool).
    seen: list[str] = []

    def sync_step(x: int) -> int:
        seen.append(threading.current_thread().name)
        return x + 1

    async def async_step(x: int) -> int:
        seen.append(threading.current_thread().name)
        return x + 1

    assert run_workflow(chain("mixed", sync_step, async_step), 0) == 2
    assert seen[0].startswith("sayiir-task")
    assert seen[1] == "sayiir-loop"


def test_a_step_with_a_timeout_runs_on_a_task_thread_and_still_times_out() -> None:
    release = threading.Event()
    seen: list[threading.Thread] = []

    @task("slow", timeout_secs=0.2)
    def slow(x: int) -> int:
        seen.append(threading.current_thread())
        release.wait(WAIT)
        return x

    started = time.monotonic()
    try:
        with pytest.raises(TaskTimeoutError):
            run_workflow(Flow("times-out").then(slow).build(), 1)
    finally:
        release.set()
    assert time.monotonic() - started < WAIT / 2
    assert seen
    assert seen[0] is not threading.current_thread()


def test_fork_branches_still_run_side_by_side() -> None:
    def nap(x: int) -> int:
        time.sleep(0.2)
        return x

    workflow = (
        Flow("naps")
        .then(lambda x: x, name="start")
        .fork()
        .branch(nap, name="a")
        .branch(nap, name="b")
        .join(lambda parts: sum(parts.values()), name="join")
        .build()
    )
    started = time.monotonic()
    assert run_workflow(workflow, 1) == 2
    assert time.monotonic() - started < 0.35


def test_map_items_still_run_side_by_side() -> None:
    def nap(x: int) -> int:
        time.sleep(0.2)
        return x * 2

    started = time.monotonic()
    assert run_workflow(Flow("map-naps").map(nap, name="item").build(), [1, 2]) == [2, 4]
    assert time.monotonic() - started < 0.35


def test_a_sync_step_returning_a_coroutine_has_it_awaited_on_the_loop_thread() -> None:
    async def where() -> str:
        return threading.current_thread().name

    workflow = Flow("returns-coroutine").then(lambda x: where(), name="where").build()
    assert run_workflow(workflow, 0) == "sayiir-loop"


# -- what a step sees --------------------------------------------------------------------


def test_a_step_sees_no_running_loop_and_may_run_its_own() -> None:
    async def answer() -> int:
        return 42

    def uses_asyncio_run(x: int) -> int:
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        return asyncio.run(answer()) + x

    assert run_workflow(chain("asyncio-run", uses_asyncio_run), 1) == 43
    assert run_workflow(chain("again", uses_asyncio_run), 2) == 44  # the loop is unharmed


def test_a_step_may_call_the_sync_api_again() -> None:
    inner = chain("inner", lambda x: x * 10)

    def nested(x: int) -> tuple[int, bool]:
        # This thread's loop is busy up the stack: the nested run goes through the loop
        # thread, and its step runs on a task thread.
        return run_workflow(inner, x), caller_loop() is None

    def twice_nested(x: int) -> int:
        middle: list[Any] = run_workflow(chain("middle", nested), x)
        return int(middle[0]) + 1

    assert run_workflow(chain("outer", nested), 3) == [30, True]
    assert run_workflow(chain("outer2", twice_nested), 3) == 31
    assert caller_loop() is not None  # free again once the run is over


def test_async_code_calling_the_sync_api_keeps_the_loop_thread_path() -> None:
    async def main() -> tuple[int, list[threading.Thread]]:
        return thread_of_each_step(2)

    output, seen = asyncio.run(main())
    assert output == 2
    assert all(thread.name.startswith("sayiir-task") for thread in seen)


def test_context_variables_and_task_context_are_as_on_a_task_thread() -> None:
    seen: list[Any] = []

    def step(x: int) -> int:
        context = get_task_context()
        assert context is not None
        seen.append((request_id.get(), context.step_key, context.attempt))
        request_id.set("set-by-step")  # stays in the step's own context
        return x + 1

    token = request_id.set("req-7")
    try:
        assert run_workflow(chain("ctx", step, step), 0) == 2
        assert request_id.get() == "req-7"
    finally:
        request_id.reset(token)
    # A sync step starts from an empty context, as on a task thread.
    assert seen == [("-", "step_0", 1), ("-", "step_1", 1)]
    assert get_task_context() is None


# -- errors, retries, interruptions ------------------------------------------------------


def test_a_failure_is_a_task_error_with_the_steps_traceback() -> None:
    def charge(x: int) -> NoReturn:
        raise ValueError("card declined")

    with pytest.raises(TaskError) as caught:
        run_workflow(chain("fails", lambda x: x, charge), 1)
    assert caught.value.error_type == "ValueError"
    assert caught.value.task_id == "step_1"
    assert "card declined" in str(caught.value)
    assert "in charge" in str(caught.value)  # the task's frame, as on a task thread


def test_retries_run_inline_too() -> None:
    attempts: list[tuple[int, threading.Thread]] = []

    @task("flaky", retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01))
    def flaky(x: int) -> int:
        context = get_task_context()
        assert context is not None
        attempts.append((context.attempt, threading.current_thread()))
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return x

    assert run_workflow(Flow("flaky").then(flaky).build(), 5) == 5
    assert attempts == [(n, threading.current_thread()) for n in (1, 2, 3)]


def test_a_keyboard_interrupt_a_step_raises_is_its_failure() -> None:
    def interrupts(x: int) -> NoReturn:
        raise KeyboardInterrupt

    with pytest.raises(TaskError) as caught:
        run_workflow(chain("raises-ki", interrupts), 1)
    assert caught.value.error_type == "KeyboardInterrupt"


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_during_an_inline_step_stops_the_run() -> None:
    assert threading.current_thread() is threading.main_thread()
    started = threading.Event()
    steps_run: list[int] = []

    def waits(x: int) -> int:
        steps_run.append(x)
        started.set()
        threading.Event().wait(WAIT)  # interrupted by the Ctrl-C
        return x

    def press_ctrl_c() -> None:
        if started.wait(WAIT):
            time.sleep(0.1)  # into the wait: a signal just before it is seen only after it
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_workflow(chain("ctrl-c", waits, waits), 1)
    finally:
        presser.join()
    assert steps_run == [1]  # not retried, not continued
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert run_workflow(chain("after-ctrl-c", lambda x: x + 1), 1) == 2


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_another_signal_handler_keeps_the_loop_thread_path() -> None:
    # Its exception would otherwise be raised inside an inline step, and taken for the
    # step's failure; through the loop thread it ends the call at once, as it always did.
    class StopError(Exception):
        pass

    def handler(signum: int, frame: object) -> NoReturn:
        raise StopError

    started = threading.Event()
    seen: list[threading.Thread] = []

    def waits(x: int) -> int:
        seen.append(threading.current_thread())
        started.set()
        threading.Event().wait(1.0)
        return x

    def send() -> None:
        if started.wait(WAIT):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(StopError):
            run_workflow(chain("other-signal", waits), 1)
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert seen
    assert seen[0] is not threading.current_thread()


# -- resources ---------------------------------------------------------------------------


@needs_proc_fds
def test_a_thread_reuses_one_loop_and_leaks_no_fds() -> None:
    workflow = chain("reuse", lambda x: x + 1)
    assert run_workflow(workflow, 0) == 1
    loop = caller_loop()
    before = open_fds()
    for _ in range(50):
        assert run_workflow(workflow, 0) == 1
    assert caller_loop() is loop
    assert open_fds() <= before + SLACK_FDS


@needs_proc_fds
def test_a_threads_loop_is_closed_when_the_thread_ends() -> None:
    workflow = chain("per-thread", lambda x: x + 1)
    assert in_thread(lambda: run_workflow(workflow, 0)) == 1  # the first may open shared fds
    gc.collect()
    before = open_fds()

    def run_and_tell_loop() -> asyncio.AbstractEventLoop:
        assert run_workflow(workflow, 0) == 1
        here = caller_loop()
        assert here is not None
        return here.loop  # not the holder: that goes with the thread

    loops = [in_thread(run_and_tell_loop) for _ in range(20)]
    gc.collect()
    assert open_fds() <= before + SLACK_FDS
    assert all(loop.is_closed() for loop in loops)


def test_a_step_that_is_alone_costs_no_event_loop_call() -> None:
    # Inline, a chain's step never goes through the loop: no task, no callback, no timer.
    def counts(length: int) -> dict[str, int]:
        here = caller_loop()
        assert here is not None
        loop = here.loop
        names = ("call_soon", "call_soon_threadsafe", "call_later", "call_at", "create_task")
        calls = dict.fromkeys(names, 0)
        for name in names:
            original = getattr(loop, name)

            def counting(
                *args: Any, _original: Any = original, _name: str = name, **kw: Any
            ) -> Any:
                calls[_name] += 1
                return _original(*args, **kw)

            setattr(loop, name, counting)
        try:
            executor = LocalExecutor()
            workflow = chain(f"count{length}", *[lambda x: x + 1] * length)
            snapshot = here.run(run_in_memory(workflow, 0, executor, "count", inline=executor))
            assert snapshot.output == length
        finally:
            for name in names:
                delattr(loop, name)
        return calls

    short, long = counts(5), counts(25)
    assert short == long, (short, long)


# -- fork --------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_loop_and_leaves_the_parents_alone() -> None:
    workflow = chain("before-fork", lambda x: x + 1)
    assert run_workflow(workflow, 0) == 1
    here = caller_loop()
    assert here is not None
    parents = here.loop  # not the holder: the child must be free to drop it
    del here
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run here and on a thread, report, leave without cleanup
        try:
            faulthandler.dump_traceback_later(WAIT, exit=True)
            mine = caller_loop()
            results = [run_workflow(workflow, 1), in_thread(lambda: run_workflow(workflow, 2))]
            gc.collect()
            fresh = mine is not None and mine.loop is not parents and not mine.loop.is_closed()
            os.write(write, f"{results} {fresh}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as from_child:
        report = from_child.read().decode()
    os.waitpid(pid, 0)
    assert report == "[2, 3] True"
    # The child let its copy of this loop be: its self-pipe still wakes it up, so steps
    # that come back from task threads are seen at once, not at the next 1 s poll.
    here = caller_loop()
    assert here is not None
    assert here.loop is parents
    fork = (
        Flow("after-fork")
        .fork()
        .branch(lambda x: x, name="a")
        .branch(lambda x: x, name="b")
        .join(lambda parts: sum(parts.values()), name="join")
        .build()
    )
    started = time.monotonic()
    for _ in range(3):
        assert run_workflow(fork, 1) == 2
    assert time.monotonic() - started < 2.5
    assert caller_loop_module._inherited == []  # nothing inherited here, in the parent


def test_with_ctrl_c_ignored_steps_still_run_inline_and_may_raise_keyboard_interrupt() -> None:
    # A background job starts with SIGINT ignored: no KeyboardInterrupt can come from it.
    def interrupts(x: int) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert thread_of_each_step(2)[1] == [threading.current_thread()] * 2
        with pytest.raises(TaskError) as caught:
            run_workflow(chain("ignored-ki", interrupts), 1)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert caught.value.error_type == "KeyboardInterrupt"


def test_a_failed_run_leaves_no_step_pending_on_the_loop() -> None:
    # The loop runs only while a run does: the steps the failure cancelled must have
    # unwound by the time the call returns, or they would be destroyed pending later.
    release = threading.Event()

    def fails(x: int) -> NoReturn:
        raise ValueError("no")

    def waits(x: int) -> int:
        release.wait(WAIT)
        return x

    workflow = (
        Flow("fails-beside")
        .fork()
        .branch(fails, name="a")
        .branch(waits, name="b")
        .join(lambda parts: 0, name="join")
        .build()
    )

    def run() -> set[asyncio.Task[Any]]:
        with pytest.raises(TaskError):
            run_workflow(workflow, 1)
        here = caller_loop()
        assert here is not None
        return asyncio.all_tasks(here.loop)  # before the thread ends and closes the loop

    try:
        left = in_thread(run)
    finally:
        release.set()
    assert not left


def test_many_threads_run_at_once_each_on_its_own_loop() -> None:
    # The engine now runs on the callers' threads side by side, not all on the loop thread.
    workflow = chain("side-by-side", *[lambda x: x + 1] * 5)

    def runs(start: int) -> list[int]:
        return [run_workflow(workflow, start + n) for n in range(30)]

    results: dict[int, list[int]] = {}
    threads = [
        threading.Thread(target=lambda k=k: results.__setitem__(k, runs(k * 100))) for k in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert results == {k: [k * 100 + n + 5 for n in range(30)] for k in range(6)}
