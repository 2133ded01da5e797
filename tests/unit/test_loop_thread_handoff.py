"""``LoopThread.run`` hands each coroutine's outcome back to the blocked caller (issue 15).

The hand-back is a lock per call rather than a concurrent future; these pin what the
callers rely on: values and errors, cancellation, an interrupted wait, the caller's
context, calls from sync tasks and from many threads, and one claim owner per process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from types import FrameType

import pytest

from sayiir_core import sync
from sayiir_core.runtime.loop_thread import LoopThread, run_sync
from sayiir_core.workflow import Flow

WAIT = 10.0  # a bound on waits for the loop thread, never a timing assertion
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class InterruptedWaitError(Exception):
    pass


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    own = LoopThread(name="sayiir-test-loop")
    yield own
    own.stop()


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


async def _fail_deep() -> None:
    await asyncio.sleep(0)
    raise ValueError("deep failure")


async def _cancel_itself() -> None:
    raise asyncio.CancelledError


def test_value_and_error_come_back_to_the_caller(loop_thread: LoopThread) -> None:
    assert loop_thread.run(_answer()) == 42
    with pytest.raises(ValueError, match="deep failure") as caught:
        loop_thread.run(_fail_deep())
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "_fail_deep" in frames  # the traceback still shows where it was raised


def test_a_cancelled_coroutine_raises_concurrent_cancelled_error(loop_thread: LoopThread) -> None:
    with pytest.raises(concurrent.futures.CancelledError):
        loop_thread.run(_cancel_itself())
    assert loop_thread.run(_answer()) == 42  # the loop is unharmed


def test_the_coroutine_sees_the_callers_context_variables(loop_thread: LoopThread) -> None:
    async def read() -> str:
        return request_id.get()

    token = request_id.set("req-7")
    try:
        assert loop_thread.run(read()) == "req-7"
    finally:
        request_id.reset(token)


def test_a_call_from_the_loop_thread_is_refused(loop_thread: LoopThread) -> None:
    async def nested() -> None:
        inner = _answer()
        try:
            loop_thread.run(inner)
        finally:
            # Closed, so no "never awaited" warning.
            assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED

    with pytest.raises(RuntimeError, match="AsyncWorkflowClient"):
        loop_thread.run(nested())


def test_a_non_coroutine_is_a_type_error(loop_thread: LoopThread) -> None:
    with pytest.raises(TypeError):
        loop_thread.run(42)  # type: ignore[arg-type]


def test_an_interrupted_wait_cancels_the_coroutine(loop_thread: LoopThread) -> None:
    """What Ctrl-C during ``run_workflow`` does: the run is cancelled, the error raised."""
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise InterruptedWaitError

    def send_when_started() -> None:
        if started.wait(WAIT):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGUSR1, interrupt)
    sender = threading.Thread(target=send_when_started)
    try:
        sender.start()
        with pytest.raises(InterruptedWaitError):
            loop_thread.run(forever())
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert cancelled.wait(WAIT)
    assert loop_thread.run(_answer()) == 42


def test_many_threads_wait_at_once(loop_thread: LoopThread) -> None:
    async def echo(n: int) -> int:
        await asyncio.sleep(0)
        return n

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: loop_thread.run(echo(n)), range(200)))
    assert results == list(range(200))


def test_a_sync_task_may_call_the_sync_api() -> None:
    inner = Flow("inner").then(lambda x: x * 10, name="times_ten").build()
    outer = (
        Flow("outer")
        .then(lambda x: sync.run_workflow(inner, x), name="nested_run")
        .then(lambda x: run_sync(_answer()) + x, name="plus_answer")
        .build()
    )
    assert sync.run_workflow(outer, 3) == 72


def test_one_claim_owner_per_process_and_a_new_one_after_fork() -> None:
    owner = sync._owner_id()
    assert owner == sync._owner_id()
    assert owner.split(":")[1] == str(os.getpid())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its owner id, then leave without cleanup
        try:
            os.write(write, sync._owner_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as from_child:
        child_owner = from_child.read().decode()
    os.waitpid(pid, 0)
    assert child_owner != owner
    assert child_owner.split(":")[1] == str(pid)
