"""SQLite off the event loop, and across ``os.fork()``.

Lock waits and disk I/O happen on each connection's own thread, so a process holding
the write lock delays only the calls that need it, never the rest of the event loop;
a forked child opens a connection of its own and leaves the parent's alone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sayiir_core import AsyncWorkflowClient, Flow
from sayiir_core.backends import ConflictPolicy, NewInstance, SqliteBackend
from sayiir_core.errors import BackendError
from sayiir_core.status import Status

LOCK_HELD_FOR = 2.0
# The ticker's period, and the longest gap between two ticks that still counts as
# "never stalled": ten periods, far below the lock's two seconds.
TICK = 0.01
MAX_GAP = 0.1
CHILD_TIMEOUT = 30.0

_LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    conn.close()
    """
)


def new(instance_id: str) -> NewInstance:
    return NewInstance(instance_id, "wf", "h", b"{}", Status.PENDING, 1.0)


def inc(x: int) -> int:
    return x + 1


async def submit_through_the_client(backend: SqliteBackend) -> None:
    client = AsyncWorkflowClient(backend)
    await client.submit(Flow("locked").then(inc).build(), "i-1", 1)


async def create_on_the_backend(backend: SqliteBackend) -> None:
    await backend.create(new("i-1"), ConflictPolicy.FAIL)


async def longest_gap_while(work: Awaitable[None]) -> tuple[float, float]:
    """Run ``work`` beside a ticker; (longest gap between ticks, seconds ``work`` took)."""
    loop = asyncio.get_running_loop()
    ticks = [loop.time()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK)
            ticks.append(loop.time())

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        ticks.append(loop.time())  # a loop blocked until now never ticked at all
        ticker.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    return max(gaps), ticks[-1] - ticks[0]


@pytest.mark.parametrize(
    "write",
    [submit_through_the_client, create_on_the_backend],
    ids=["client-submit", "backend-create"],
)
async def test_a_write_waiting_for_another_process_lock_never_stalls_the_loop(
    tmp_path: Path, write: Callable[[SqliteBackend], Awaitable[None]]
) -> None:
    path = tmp_path / "sayiir.db"
    backend = SqliteBackend(path)
    await backend.open()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCK_HOLDER,
        str(path),
        str(LOCK_HELD_FOR),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 60) == b"locked\n"

        longest_gap, took = await longest_gap_while(write(backend))

        # The write really waited for the other process: otherwise nothing was tested.
        assert took > LOCK_HELD_FOR / 2
        assert longest_gap < MAX_GAP, f"the event loop stalled {longest_gap * 1000:.0f} ms"
        assert await backend.get_record("i-1") is not None
    finally:
        assert await asyncio.wait_for(holder.wait(), 60) == 0
        await backend.close()


async def test_a_call_cancelled_while_waiting_for_a_lock_leaves_the_backend_usable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sayiir.db"
    backend = SqliteBackend(path)
    await backend.open()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCK_HOLDER,
        str(path),
        str(LOCK_HELD_FOR),
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), 60) == b"locked\n"

    waiting = asyncio.create_task(backend.create(new("i-1"), ConflictPolicy.FAIL))
    queued = asyncio.create_task(backend.create(new("i-2"), ConflictPolicy.FAIL))
    await asyncio.sleep(0.1)
    waiting.cancel()
    queued.cancel()
    for cancelled in (waiting, queued):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert await asyncio.wait_for(holder.wait(), 60) == 0

    # The write already waiting on the thread still ran, all or nothing; the one
    # cancelled before its turn never ran.
    assert await backend.get_record("i-1") is not None
    assert await backend.get_record("i-2") is None
    await backend.create(new("i-3"), ConflictPolicy.FAIL)
    await backend.close()


def forked(child: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``child`` in a forked process; its exit code (0 when it returned)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads is unsafe in general;
        # surviving exactly that (Celery prefork, gunicorn --preload) is under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            asyncio.run(child())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    # A child stuck on something inherited from the parent: fail, leaving no orphan.
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not finish within {CHILD_TIMEOUT}s")


@pytest.mark.parametrize("reopen", [True, False], ids=["open-again", "direct-use"])
def test_a_forked_child_uses_its_own_connection_and_the_parent_keeps_its(
    tmp_path: Path, reopen: bool
) -> None:
    backend = SqliteBackend(tmp_path / "sayiir.db")
    parent_loop = asyncio.new_event_loop()
    try:
        parent_loop.run_until_complete(backend.open())
        parent_loop.run_until_complete(backend.create(new("before-fork"), ConflictPolicy.FAIL))

        async def child() -> None:
            if reopen:  # what the engine does when it sees a new pid
                await backend.open()
            assert await backend.get_record("before-fork") is not None
            await backend.create(new("from-child"), ConflictPolicy.FAIL)
            record = await backend.get_record("from-child")
            assert record is not None
            assert record.status is Status.PENDING
            await backend.close()

        assert forked(child) == 0

        async def parent_still_works() -> None:
            assert await backend.get_record("from-child") is not None
            await backend.create(new("after-fork"), ConflictPolicy.FAIL)
            page = await backend.list_instances()
            assert sorted(r.instance_id for r in page.items) == [
                "after-fork",
                "before-fork",
                "from-child",
            ]

        parent_loop.run_until_complete(parent_still_works())
    finally:
        parent_loop.run_until_complete(backend.close())
        parent_loop.close()


def test_a_backend_closed_before_the_fork_stays_closed_in_the_child(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "sayiir.db")
    asyncio.run(backend.open())
    asyncio.run(backend.close())

    async def child() -> None:
        with pytest.raises(BackendError, match="not open"):
            await backend.get_record("i-1")

    assert forked(child) == 0


def test_forks_while_the_parent_writes_give_working_children(tmp_path: Path) -> None:
    """A fork waits for calls in progress, so no child starts inside SQLite."""
    backend = SqliteBackend(tmp_path / "sayiir.db")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(backend.open())
    written = 0

    async def keep_writing(stop: asyncio.Event) -> None:
        nonlocal written
        while not stop.is_set():
            await backend.create(new(f"parent-{written}"), ConflictPolicy.FAIL)
            written += 1

    async def main() -> list[int]:
        stop = asyncio.Event()
        writer = asyncio.create_task(keep_writing(stop))
        codes = []
        for n in range(5):
            await asyncio.sleep(0.02)

            async def child(n: int = n) -> None:
                await backend.create(new(f"child-{n}"), ConflictPolicy.FAIL)

            # Forked from the loop thread while the connection's thread is mid-call.
            codes.append(forked(child))
        stop.set()
        await writer
        return codes

    try:
        assert loop.run_until_complete(main()) == [0] * 5
        children = [f"child-{n}" for n in range(5)]
        for instance_id in children:
            assert loop.run_until_complete(backend.get_record(instance_id)) is not None
        assert written > 0
    finally:
        loop.run_until_complete(backend.close())
        loop.close()
