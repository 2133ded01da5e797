"""What only ``SqliteBackend`` promises: durability, a shared file, clear errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sayiir_core.backends import (
    ConflictPolicy,
    HistoryEvent,
    NewInstance,
    SqliteBackend,
    StepWrite,
)
from sayiir_core.errors import BackendError, LeaseLostError
from sayiir_core.status import Status

NOW = 1_000.0
HASH = "hash-1"
TTL = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def new(instance_id: str = "i-1", *, now: float = NOW) -> NewInstance:
    return NewInstance(instance_id, "wf", HASH, b"{}", Status.PENDING, now)


def step(
    status: Status = Status.RUNNING, checkpoints: list[tuple[str, bytes]] | None = None
) -> StepWrite:
    return StepWrite(status, {}, NOW + 1, checkpoints=checkpoints or [])


async def opened(
    path: Path, *, synchronous: str = "FULL", busy_timeout: float = 30.0
) -> SqliteBackend:
    backend = SqliteBackend(path, synchronous=synchronous, busy_timeout=busy_timeout)
    await backend.open()
    return backend


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    first = await opened(path)
    await first.create(new(), ConflictPolicy.FAIL)
    claim = await first.claim("i-1", "w1", TTL, NOW)
    event = HistoryEvent("task_completed", NOW + 1, "a", 1, "w1", {"ms": 2})
    await first.commit(
        "i-1",
        claim.token,
        StepWrite(
            Status.RUNNING, {"attempts": {}}, NOW + 1, checkpoints=[("a", b"\x01")], events=[event]
        ),
    )
    await first.send_signal("i-1", "go", b"payload", NOW + 2)
    before = await first.load("i-1")
    await first.close()

    second = await opened(path)
    try:
        assert await second.load("i-1") == before
        signal = await second.next_signal("i-1", "go")
        assert signal is not None
        assert signal.payload == b"payload"
        assert [e.kind for e in await second.history("i-1")] == [
            "started",
            "task_completed",
            "signal_sent",
        ]
    finally:
        await second.close()


async def test_two_backend_objects_share_the_file_and_fencing(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    a, b = await opened(path), await opened(path)
    try:
        await a.create(new(), ConflictPolicy.FAIL)
        assert await b.get_record("i-1") is not None
        stale = await a.claim("i-1", "worker-a", TTL, NOW)
        current = await b.claim("i-1", "worker-b", TTL, NOW + 1)

        with pytest.raises(LeaseLostError):
            await a.commit("i-1", stale.token, step(checkpoints=[("x", b"from a")]))
        await b.commit("i-1", current.token, step(checkpoints=[("x", b"from b")]))

        assert await a.get_checkpoint("i-1", "x") == b"from b"
        assert not await a.renew("i-1", stale.token, TTL, NOW + 2)
        assert await a.claim_next("worker-a", {"wf": HASH}, TTL, NOW + 2, 10) == []
    finally:
        await a.close()
        await b.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from sayiir_core.backends import SqliteBackend, StepWrite
    from sayiir_core.status import Status

    async def main():
        backend = SqliteBackend(sys.argv[1])
        await backend.open()
        print("ready", flush=True)
        done = []
        while claims := await backend.claim_next("child", {"wf": "hash-1"}, 60.0, 2000.0, 1):
            for claim in claims:
                instance_id = claim.instance.record.instance_id
                write = StepWrite(Status.COMPLETED, {}, 2000.0, checkpoints=[("work", b"child")])
                await backend.commit(instance_id, claim.token, write)
                done.append(instance_id)
            await asyncio.sleep(0.001)  # the task's own work, between two transactions
        await backend.close()
        print(json.dumps(done), flush=True)

    asyncio.run(main())
    """
)


async def test_a_second_process_works_the_same_file_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    backend = await opened(path)
    ids = [f"i-{n:03}" for n in range(200)]
    for instance_id in ids:
        await backend.create(new(instance_id), ConflictPolicy.FAIL)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"

    mine = []
    while claims := await backend.claim_next("parent", {"wf": HASH}, 60.0, 2000.0, 1):
        for claim in claims:
            instance_id = claim.instance.record.instance_id
            await backend.commit(
                instance_id, claim.token, step(Status.COMPLETED, [("work", b"parent")])
            )
            mine.append(instance_id)
        # Like a real worker, leave a gap between transactions: SQLite's lock is not
        # fair, and back-to-back writers can starve each other (not what this tests).
        await asyncio.sleep(0.001)
    out, err = await asyncio.wait_for(child.communicate(), 60)

    assert child.returncode == 0, err.decode()
    theirs = json.loads(out)
    assert sorted(mine + theirs) == ids  # every instance done, and done once
    assert mine, "the child process did all the work: no overlap"
    assert theirs, "the parent process did all the work: no overlap"
    for instance_id in ids:
        expected = b"parent" if instance_id in mine else b"child"
        assert await backend.get_checkpoint(instance_id, "work") == expected
    page = await backend.list_instances(status=Status.COMPLETED, limit=500)
    assert len(page.items) == len(ids)
    await backend.close()


_FINISHER = textwrap.dedent(
    """
    import sys
    from sayiir_core import Flow, SqliteBackend, resume_workflow

    wf = Flow("xproc").then(lambda x: x + 1, name="inc").build()
    resume_workflow(wf, "x-1", backend=SqliteBackend(sys.argv[1]))
    """
)


def test_a_client_waiting_sees_a_finish_made_by_another_process(tmp_path: Path) -> None:
    from sayiir_core import Flow, WorkflowClient

    path = tmp_path / "shared.db"
    client = WorkflowClient(SqliteBackend(path), owns_backend=True)
    client.submit(Flow("xproc").then(lambda x: x + 1, name="inc").build(), "x-1", 1)
    child = subprocess.Popen(
        [sys.executable, "-c", _FINISHER, str(path)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        # Nothing can push a finish across processes on SQLite: the wait's re-reads
        # (every 0.05 s by default) find it.
        assert client.result("x-1", timeout=60) == 2
    finally:
        assert child.wait(60) == 0
        client.close()


_OPENER = textwrap.dedent(
    """
    import asyncio, sys
    from sayiir_core.backends import ConflictPolicy, NewInstance, SqliteBackend
    from sayiir_core.status import Status

    async def main():
        backend = SqliteBackend(sys.argv[1])
        await backend.open()
        new = NewInstance(sys.argv[2], "wf", "h", b"{}", Status.PENDING, 1.0)
        await backend.create(new, ConflictPolicy.FAIL)
        await backend.close()

    print("ready", flush=True)
    sys.stdin.readline()  # every opener is started and imported: open all at once
    asyncio.run(main())
    """
)
OPENERS = 8


async def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    # Switching a new file to WAL, migrating it and closing the last connection are
    # where SQLite answers "database is locked" at once instead of waiting; openers
    # released together make those collisions likely.
    path = tmp_path / "fresh" / "sayiir.db"
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OPENER,
            str(path),
            f"p-{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        for n in range(OPENERS)
    ]
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
    results = [await asyncio.wait_for(child.communicate(), 60) for child in children]

    assert [child.returncode for child in children] == [0] * OPENERS, [err for _, err in results]
    backend = await opened(path)
    page = await backend.list_instances()
    assert sorted(r.instance_id for r in page.items) == [f"p-{n}" for n in range(OPENERS)]
    await backend.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM sayiir_migrations").fetchall() == [(1,)]
    raw.close()


def rollback_journal_file_being_written(path: Path) -> sqlite3.Connection:
    """A file as another process leaves it mid-creation: no WAL yet, write lock held.

    Switching such a file to WAL is refused at once (SQLITE_BUSY without calling the
    busy handler), the case that made openers started together fail.
    """
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("CREATE TABLE scratch (x)")
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


async def test_open_retries_what_sqlite_refuses_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    blocker = rollback_journal_file_being_written(path)
    asyncio.get_running_loop().call_later(0.3, blocker.execute, "COMMIT")

    backend = await opened(path, busy_timeout=30)
    try:
        await backend.create(new(), ConflictPolicy.FAIL)
        assert await backend.get_record("i-1") is not None
    finally:
        await backend.close()
        blocker.close()


async def test_open_that_stays_locked_says_what_it_was_doing_and_for_how_long(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sayiir.db"
    blocker = rollback_journal_file_being_written(path)
    loop = asyncio.get_running_loop()
    started = loop.time()

    try:
        with pytest.raises(BackendError) as caught:
            await opened(path, busy_timeout=0.3)
    finally:
        blocker.close()

    message = str(caught.value)
    assert "open failed: database is locked while switching the file to WAL" in message
    assert re.search(r"still locked after 0\.[3-9]s of waiting and \d+ attempt", message)
    assert "busy_timeout=0.3s" in message
    assert loop.time() - started >= 0.3  # it retried until busy_timeout, not at once


def test_one_backend_object_serves_several_threads_and_loops(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "sayiir.db")
    asyncio.run(backend.open())
    ids = [f"i-{n:02}" for n in range(40)]
    for instance_id in ids:
        asyncio.run(backend.create(new(instance_id), ConflictPolicy.FAIL))
    done: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    async def work(mine: list[str]) -> None:
        while claims := await backend.claim_next("t", {"wf": HASH}, TTL, NOW, 1):
            instance_id = claims[0].instance.record.instance_id
            await backend.commit(instance_id, claims[0].token, step(Status.COMPLETED))
            mine.append(instance_id)

    def run(mine: list[str]) -> None:
        try:
            asyncio.run(work(mine))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(mine,)) for mine in done]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sorted(itertools.chain.from_iterable(done)) == ids
    asyncio.run(backend.close())


async def test_open_creates_the_directory_uses_wal_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "sayiir.db"
    backend = SqliteBackend(path)
    await backend.open()
    await backend.open()
    await SqliteBackend(path).open()  # a second opener finds nothing left to migrate

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version, name FROM sayiir_migrations").fetchall() == [
            (1, "initial")
        ]
    raw.close()
    await backend.close()
    await backend.close()
    # A closed backend can be opened again.
    await backend.open()
    assert await backend.get_record("nope") is None
    await backend.close()


@pytest.mark.parametrize(("mode", "level"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
async def test_synchronous_mode_is_applied(tmp_path: Path, mode: str, level: int) -> None:
    backend = await opened(tmp_path / "sayiir.db", synchronous=mode)
    # synchronous is per connection, so only the backend's own connection can show it.
    setting = await backend._run(
        "test", None, lambda conn: conn.execute("PRAGMA synchronous").fetchone()
    )
    assert setting == (level,)
    await backend.close()


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteBackend(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteBackend(tmp_path / "x.db", busy_timeout=-1)


async def test_a_file_that_is_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 50)

    with pytest.raises(BackendError, match="is not a SQLite database") as caught:
        await SqliteBackend(path).open()

    assert str(path) in str(caught.value)
    assert path.read_text().startswith("these are my notes")


async def test_a_directory_path_is_a_backend_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as caught:
        await SqliteBackend(tmp_path).open()

    assert str(tmp_path) in str(caught.value)


async def test_use_before_open_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"not open; call open\(\)"):
        await SqliteBackend(tmp_path / "x.db").get_record("i-1")


async def test_sqlite_errors_surface_as_backend_errors(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    backend = await opened(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE sayiir_checkpoints")
    raw.close()

    with pytest.raises(BackendError, match="no such table") as caught:
        await backend.get_checkpoint("i-1", "a")

    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    await backend.close()


async def test_a_held_write_lock_times_out_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    backend = await opened(path, busy_timeout=0.2)
    await backend.create(new(), ConflictPolicy.FAIL)
    claim = await backend.claim("i-1", "w1", TTL, NOW)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    with pytest.raises(BackendError, match=r"busy_timeout=0\.2s"):
        await backend.commit("i-1", claim.token, step(checkpoints=[("a", b"1")]))

    blocker.execute("ROLLBACK")
    blocker.close()
    # Nothing half-done is left behind, and the backend is usable again.
    assert await backend.get_checkpoint("i-1", "a") is None
    await backend.commit("i-1", claim.token, step(checkpoints=[("a", b"1")]))
    assert await backend.get_checkpoint("i-1", "a") == b"1"
    await backend.close()


async def test_a_schema_newer_than_this_library_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sayiir.db"
    await (await opened(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO sayiir_migrations VALUES (999, 'future', 0)")
    raw.close()

    with pytest.raises(BackendError, match=r"version 999.*upgrade sayiir_core"):
        await SqliteBackend(path).open()


async def test_a_non_json_history_detail_fails_before_writing(tmp_path: Path) -> None:
    backend = await opened(tmp_path / "sayiir.db")
    await backend.create(new(), ConflictPolicy.FAIL)
    claim = await backend.claim("i-1", "w1", TTL, NOW)
    bad = HistoryEvent("task_completed", NOW, detail={"value": object()})

    with pytest.raises(BackendError, match="history detail"):
        await backend.commit(
            "i-1",
            claim.token,
            StepWrite(Status.RUNNING, {}, NOW, checkpoints=[("a", b"")], events=[bad]),
        )

    assert await backend.get_checkpoint("i-1", "a") is None
    await backend.close()
