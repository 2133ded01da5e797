"""After ``os.fork()`` a backend works in the child and the parent keeps working.

The rule every backend follows (``sayiir_core.backends.forks``): ``open()`` in a process
other than the one that opened the backend forgets what it inherited — pool, LISTEN
connections, locks, loop-bound waiters — without closing any of it (the parent still
uses those sockets), and opens afresh. Here the parent uses the backend on the sayiir
loop thread, forks, and the child opens it again on a fresh event loop, creates and
reads an instance. (The sync API across a fork is the runtime's test.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import traceback
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import pytest
from postgres_service import run_sync as run_on_fresh_loop

from sayiir_core.backends import ConflictPolicy, InMemoryBackend, NewInstance
from sayiir_core.errors import BackendError
from sayiir_core.runtime.loop_thread import run_sync, submit
from sayiir_core.status import Status

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

NOW = 1_000.0


def new(instance_id: str) -> NewInstance:
    return NewInstance(instance_id, "wf", "hash-1", b"{}", Status.PENDING, NOW)


def in_child(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Fork; the child runs ``main`` on a fresh event loop; fail here if it failed there."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads: that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            signal.alarm(60)  # a hang (the bug this guards against) ends the child
            asyncio.run(main())
            status = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as errors:
        report = errors.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, f"the child failed:\n{report}"


# -- PostgreSQL ---------------------------------------------------------------------------


async def _session_pids(url: str, app_name: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app_name
        )
    finally:
        await conn.close()
    return {row[0] for row in rows}


async def _notify(url: str, channel: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_notify($1, '')", channel)
    finally:
        await conn.close()


@pytest.fixture
def postgres_backend(postgres_schema: tuple[str, str]) -> Iterator[tuple[Any, str, str]]:
    """``(backend, url, application_name)``: opened on the sayiir loop thread, closed after."""
    from sayiir_core.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    app_name = f"sayiir_fork_{secrets.token_hex(4)}"
    backend = PostgresBackend(f"{url}?application_name={app_name}", schema=schema)
    run_sync(backend.open())
    try:
        yield backend, url, app_name
    finally:
        run_sync(backend.close())


@pytest.mark.postgres
def test_a_forked_child_opens_its_own_postgres_connections(
    postgres_backend: tuple[Any, str, str],
) -> None:
    backend, url, app_name = postgres_backend
    run_sync(backend.create(new("parent-1"), ConflictPolicy.FAIL))
    run_sync(backend.wait_for_work(0.05))  # makes the LISTEN connection
    parents = run_on_fresh_loop(_session_pids(url, app_name))
    assert len(parents) >= 2  # pooled and LISTEN

    async def child() -> None:
        with pytest.raises(BackendError, match=r"call open\(\) here first"):
            await backend.get_record("parent-1")
        await backend.open()
        await backend.create(new("child-1"), ConflictPolicy.FAIL)
        assert await backend.get_record("parent-1") is not None
        await backend.wait_for_work(0.05)  # a LISTEN connection of its own
        session = backend._session
        async with session.connection(session.pool(), "test") as conn:
            assert conn.get_server_pid() not in parents
        mine = await _session_pids(url, app_name) - parents
        assert len(mine) >= 2
        await backend.close()  # closes the child's connections, none of the parent's

    in_child(child)

    # The parent's sessions are all still there, and its backend works.
    assert run_on_fresh_loop(_session_pids(url, app_name)) == parents
    assert run_sync(backend.get_record("child-1")) is not None
    run_sync(backend.create(new("parent-2"), ConflictPolicy.FAIL))
    # Its LISTEN connection still hears notifications.
    run_sync(backend.wait_for_work(0.2))  # takes in any the child's work sent
    waiting = submit(backend.wait_for_work(30))
    run_on_fresh_loop(_notify(url, backend._sql.channel))
    waiting.result(timeout=10)  # woken, long before its 30 s


@pytest.mark.postgres
def test_close_in_a_forked_child_only_forgets_the_parents_connections(
    postgres_backend: tuple[Any, str, str],
) -> None:
    backend, url, app_name = postgres_backend
    run_sync(backend.wait_for_work(0.05))
    parents = run_on_fresh_loop(_session_pids(url, app_name))

    async def child() -> None:
        await backend.close()  # e.g. a cleanup in a worker process that never used it

    in_child(child)

    assert run_on_fresh_loop(_session_pids(url, app_name)) == parents
    assert run_sync(backend.get_record("nope")) is None


# -- memory -------------------------------------------------------------------------------


def test_a_forked_child_gets_its_own_copy_of_an_in_memory_backend() -> None:
    backend = InMemoryBackend()
    run_sync(backend.open())
    run_sync(backend.create(new("parent-1"), ConflictPolicy.FAIL))
    # Another thread is inside the backend (holding its lock) at the moment of the fork.
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with backend._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert held.wait(5)

    async def child() -> None:
        await backend.open()  # a new lock: the one held at the fork never comes free here
        waiting = asyncio.create_task(backend.wait_for_work(30))
        await asyncio.sleep(0)
        await backend.create(new("child-1"), ConflictPolicy.FAIL)
        await asyncio.wait_for(waiting, 10)  # the child's own notifier wakes its waiter
        assert await backend.get_record("parent-1") is not None

    try:
        in_child(child)
    finally:
        release.set()
        holder.join()

    # The copies are separate from the fork on: the child's instance is not here.
    assert run_sync(backend.get_record("child-1")) is None
    run_sync(backend.create(new("parent-2"), ConflictPolicy.FAIL))
