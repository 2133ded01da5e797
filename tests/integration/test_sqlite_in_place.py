"""Calls run in place on an idle, quick SQLite connection, and on its thread otherwise.

``ConnectionThread.call(fn, try_here=...)`` saves the hop to the connection's thread
when nothing else uses the connection; these tests pin down when it may not: a call
queued or running before it, a recent slow call, a lock held by another connection.
And since our connections never checkpoint inside a commit, that the WAL still stays
short.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sayiir_core.backends import ConflictPolicy, NewInstance, SqliteBackend
from sayiir_core.backends.sqlite import checkpoints, connection
from sayiir_core.backends.sqlite.connection import _QUICK, ConnectionThread, WouldWait
from sayiir_core.backends.sqlite.schema import open_database
from sayiir_core.errors import BackendError
from sayiir_core.status import Status


def new(instance_id: str) -> NewInstance:
    return NewInstance(instance_id, "wf", "h", b"{}", Status.PENDING, 1.0)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[ConnectionThread]:
    thread = ConnectionThread(
        lambda: open_database(tmp_path / "sayiir.db", synchronous="FULL", busy_timeout=5.0),
        name="test-sqlite",
        not_open=lambda: BackendError("not open"),
    )
    yield thread
    thread.stop()


@pytest.fixture
def quick_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call counts as quick, so calls are tried in place however slow the disk."""
    monkeypatch.setattr(connection, "_QUICK", 60.0)


def where(label: str) -> Callable[[sqlite3.Connection], tuple[str, int]]:
    """A call that reports which thread ran it."""
    return lambda conn: (label, threading.get_ident())


async def test_an_idle_connection_runs_the_call_in_place(worker: ConnectionThread) -> None:
    await worker.opened()
    label, ran_on = await worker.call(where("thread"), try_here=where("here"))
    assert (label, ran_on) == ("here", threading.get_ident())


async def test_a_call_never_overtakes_one_submitted_before_it(worker: ConnectionThread) -> None:
    await worker.opened()
    order: list[str] = []
    release = threading.Event()

    def first(conn: sqlite3.Connection) -> None:
        release.wait(10)
        order.append("first")

    def second(label: str) -> Callable[[sqlite3.Connection], str]:
        def run(conn: sqlite3.Connection) -> str:
            order.append("second")
            return label

        return run

    running = asyncio.create_task(worker.call(first))
    await asyncio.sleep(0.05)  # first is on the thread, holding the connection
    behind = asyncio.create_task(worker.call(second("thread"), try_here=second("here")))
    await asyncio.sleep(0.05)
    assert order == []
    release.set()
    await running
    assert await behind == "thread"
    assert order == ["first", "second"]


async def test_calls_go_to_the_thread_while_the_disk_is_slow_and_back_when_quick(
    worker: ConnectionThread,
) -> None:
    await worker.opened()

    def slow(label: str) -> Callable[[sqlite3.Connection], tuple[str, int]]:
        def run(conn: sqlite3.Connection) -> tuple[str, int]:
            threading.Event().wait(_QUICK * 40)  # a commit waiting for a slow fsync
            return label, threading.get_ident()

        return run

    assert (await worker.call(slow("thread"), try_here=slow("here")))[0] == "here"
    # One call that slow is enough: the next ones run on the thread, and are timed there.
    labels = [(await worker.call(slow("thread"), try_here=slow("here")))[0] for _ in range(5)]
    assert labels == ["thread"] * 5
    # Quick again: within a few dozen calls they run in place again.
    labels = [(await worker.call(where("thread"), try_here=where("here")))[0] for _ in range(99)]
    assert "here" in labels
    assert labels[-1] == "here"


async def test_quick_reads_do_not_let_slow_writes_run_in_place(
    worker: ConnectionThread,
) -> None:
    """A web process reads status between commits: the reads are quick, the commits
    wait for a slow fsync. Writes are judged by writes alone."""
    await worker.opened()

    def slow_write(label: str) -> Callable[[sqlite3.Connection], tuple[str, int]]:
        def run(conn: sqlite3.Connection) -> tuple[str, int]:
            threading.Event().wait(_QUICK * 4)  # a commit waiting for a slow fsync
            return label, threading.get_ident()

        return run

    labels = []
    for _ in range(30):
        labels.append(
            (await worker.call(slow_write("thread"), try_here=slow_write("here"), writes=True))[0]
        )
        for _ in range(4):
            await worker.call(where("thread"), try_here=where("here"))
    # The first few writes run in place until their average passes _QUICK; none after.
    assert labels[-20:] == ["thread"] * 20


async def test_a_call_refused_in_place_runs_on_the_thread(worker: ConnectionThread) -> None:
    await worker.opened()

    def refused(conn: sqlite3.Connection) -> tuple[str, int]:
        raise WouldWait

    label, ran_on = await worker.call(where("thread"), try_here=refused)
    assert label == "thread"
    assert ran_on != threading.get_ident()
    # Refused once: the next calls do not try in place first.
    assert (await worker.call(where("thread"), try_here=where("here")))[0] == "thread"


async def test_a_write_in_place_is_refused_at_once_while_another_connection_writes(
    tmp_path: Path, quick_disk: None
) -> None:
    path = tmp_path / "sayiir.db"
    backend = SqliteBackend(path, busy_timeout=5.0)
    await backend.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    started = loop.time()
    committed_after: list[float] = []

    def commit() -> None:
        other.execute("COMMIT")
        committed_after.append(loop.time() - started)

    loop.call_later(0.3, commit)
    # Refused in place without waiting; the thread waits for the lock, and the loop
    # stays free to run the COMMIT above, on time, that releases it.
    await backend.create(new("i-1"), ConflictPolicy.FAIL)
    assert committed_after[0] < 0.5, f"the loop was held {committed_after[0]:.1f}s"
    assert loop.time() - started >= 0.3
    assert await backend.get_record("i-1") is not None
    other.close()
    await backend.close()


async def test_checkpoints_keep_the_wal_short_without_sqlite_checkpointing_in_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sayiir.db"
    backend = SqliteBackend(path)
    await backend.open()
    every = checkpoints.WRITES_PER_CHECKPOINT
    for n in range(10 * every):
        await backend.create(new(f"i-{n}"), ConflictPolicy.FAIL)
    await backend.get_record("i-0")  # after the checkpoints queued before it
    # A create adds about 7 pages to the WAL: ~14,000 over these writes without
    # checkpoints, ~1,400 with one every `every` writes (SQLite's own default is 1,000).
    pages = path.with_name(path.name + "-wal").stat().st_size // 4096
    assert pages < 2 * every * 10, f"the WAL grew to {pages} pages"
    await backend.close()


async def test_a_claim_waiting_for_another_connections_lock_leaves_the_loop_free(
    tmp_path: Path, quick_disk: None
) -> None:
    path = tmp_path / "sayiir.db"
    backend = SqliteBackend(path, busy_timeout=5.0)
    await backend.open()
    await backend.create(new("i-1"), ConflictPolicy.FAIL)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    # claim_next looks without the lock, then takes it to claim: that wait must not
    # hold the loop, or the COMMIT above could never release the lock.
    claims = await backend.claim_next("w", {"wf": "h"}, 30.0, 2.0, 1)
    assert [c.instance.record.instance_id for c in claims] == ["i-1"]
    other.close()
    await backend.close()
