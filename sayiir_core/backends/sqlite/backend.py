"""``SqliteBackend``: the backend contract on one SQLite file, durable and embedded.

The file is opened in WAL mode with ``synchronous=FULL`` by default, so a step that
``commit`` returned from survives a power cut. Several processes may share the file:
every write runs in ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two
writers queue on ``busy_timeout`` instead of failing on a lock upgrade), and claim
tokens fence out a worker whose lease was taken over.

The connection, its thread and what runs in place on the event loop are ``file.py``'s
(``SqliteFile``): no call waits on the loop for a lock or a slow disk. Any event loop
in any thread may use the object.

Each method reads as "transaction, rule, write": the transaction is a plain function of
the connection, run by ``_run``, and in-process wake-ups follow it.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from sayiir_core.backends.base import (
    BufferedSignal,
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
    LoadedInstance,
    NewInstance,
    StepWrite,
)
from sayiir_core.backends.notify import FinishWatch
from sayiir_core.backends.rows import event_from_row, record_from_row, record_values
from sayiir_core.backends.rules import (
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_room,
    check_signal_target,
    decode_cursor,
    encode_cursor,
    is_claimable,
    keeps_existing,
    missing,
    new_record,
    settled_status,
    signal_wakes,
    terminated_record,
)
from sayiir_core.backends.sqlite import statements as sql
from sayiir_core.backends.sqlite import stats
from sayiir_core.backends.sqlite.file import SqliteFile
from sayiir_core.backends.sqlite.locking import transact
from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.errors import LeaseLostError
from sayiir_core.status import Status

T = TypeVar("T")

# How often a client waiting for a result re-reads the instance (see watch_finish).
_FINISH_POLL_INTERVAL = 0.05


class SqliteBackend(SqliteFile):
    """A durable backend in one SQLite file; the default for the CLI and examples.

    ``synchronous`` is SQLite's durability setting: ``FULL`` (default) syncs the WAL on
    every commit; ``NORMAL`` is faster but a power cut may lose the last steps (never
    corrupt the file); ``EXTRA`` is ``FULL`` plus SQLite's extra directory syncs.
    ``busy_timeout`` is how many seconds an operation may wait for other connections'
    locks (in this process or another) before failing; the wait happens on the
    connection's thread, never on the event loop.

    The engine opens the backend on first use (``open()`` creates the file and its
    directory and migrates the schema); call ``close()`` when done. In a child process
    forked from one where the backend was open, the first call (or ``open()``) opens a
    connection of the child's own; the parent's is left untouched.

    Example::

        backend = SqliteBackend("var/sayiir.db")
        status = run_durable_workflow(wf, "order-1", {"id": 1}, backend=backend)
    """

    def __repr__(self) -> str:
        return f"SqliteBackend({str(self._path)!r}, synchronous={self._synchronous!r})"

    async def wait_for_work(self, max_wait: float) -> None:
        # Wakes at once for work made runnable in this process; other processes' work
        # is found when the timeout (the worker's poll interval) runs out.
        await self._notifier.wait(max_wait)

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        # Finishes in this process fire the watch; another process's are seen by the
        # waiter's next read, so it reads often (a local read costs tens of µs).
        return self._finished.watch(instance_id, _FINISH_POLL_INTERVAL)

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        def transaction(conn: sqlite3.Connection) -> tuple[InstanceRecord, bool]:
            row = conn.execute(sql.SELECT_RECORD, (new.instance_id,)).fetchone()
            if row is None:
                record, started = new_record(new)
                events = [started]
            else:
                existing = record_from_row(row)
                if keeps_existing(existing, policy):
                    return existing, False
                record, started = new_record(new, replaces=existing)
                events = [terminated_record(new.now), started]
                # Delete and re-insert rather than update: the new row gets a new seq,
                # so it lists as the newest instance, like any other fresh submission.
                for statement in (sql.DELETE_INSTANCE, sql.DELETE_CHECKPOINTS, sql.DELETE_SIGNALS):
                    conn.execute(statement, (new.instance_id,))
            conn.execute(sql.INSERT_RECORD, record_values(record))
            sql.append_events(conn, new.instance_id, events)
            return record, True

        record, created = await self._write("create", transaction)
        if created and record.status is Status.PENDING:
            self._notifier.notify()
        return record, created

    async def load(self, instance_id: str) -> LoadedInstance | None:
        def transaction(conn: sqlite3.Connection) -> LoadedInstance | None:
            row = conn.execute(sql.SELECT_RECORD, (instance_id,)).fetchone()
            if row is None:
                return None
            return LoadedInstance(record_from_row(row), sql.checkpoints(conn, instance_id))

        # One read transaction, so the record and its checkpoints are the same snapshot.
        return await self._run("load", "BEGIN", transaction)

    async def get_record(self, instance_id: str) -> InstanceRecord | None:
        def read(conn: sqlite3.Connection) -> InstanceRecord | None:
            row = conn.execute(sql.SELECT_RECORD, (instance_id,)).fetchone()
            return record_from_row(row) if row is not None else None

        return await self._run("get_record", None, read)

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(sql.SELECT_CHECKPOINT, (instance_id, key)).fetchone()
            return bytes(row[0]) if row is not None else None

        return await self._run("get_checkpoint", None, read)

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        def transaction(conn: sqlite3.Connection) -> Claim:
            rows = conn.execute(sql.CLAIM, (owner, now + ttl, instance_id)).fetchall()
            if not rows:
                raise missing(instance_id)
            record = record_from_row(rows[0])
            loaded = LoadedInstance(record, sql.checkpoints(conn, instance_id))
            return Claim(loaded, record.claim_token)

        return await self._write("claim", transaction)

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        if limit < 1 or not workflows:
            return []
        query = sql.claimable_query(len(workflows))
        params = sql.claimable_params(workflows, now, limit)

        def take(conn: sqlite3.Connection) -> list[Claim]:
            candidates = [record_from_row(row) for row in conn.execute(query, params)]
            taken = [
                dataclasses.replace(
                    record, owner=owner, claim_token=record.claim_token + 1, lease_until=now + ttl
                )
                for record in candidates
                if is_claimable(record, now)
            ]
            conn.executemany(
                sql.TAKE,
                [(owner, r.claim_token, r.lease_until, r.instance_id) for r in taken],
            )
            return [
                Claim(LoadedInstance(r, sql.checkpoints(conn, r.instance_id)), r.claim_token)
                for r in taken
            ]

        def poll(conn: sqlite3.Connection) -> list[Claim]:
            # Idle workers poll often: look first without the write lock, so an empty
            # poll never makes a committing worker wait. The query runs again under it.
            if not conn.execute(query, {**params, "limit": 1}).fetchall():
                return []
            return transact(
                conn,
                take,
                begin="BEGIN IMMEDIATE",
                path=self._path,
                action="claim_next",
                busy_timeout=self._busy_timeout,
            )

        # On the thread only: poll's write transaction waits for the lock (busy_timeout).
        return await self._run("claim_next", None, poll, here=False)

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        def transaction(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(sql.RENEW, (now + ttl, instance_id, token))
            return cursor.rowcount == 1

        return await self._write("renew", transaction)

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        # Encode everything before the transaction: a bad value fails with nothing begun.
        new_status, params = sql.commit_params(instance_id, token, write)
        events = [sql.event_params(instance_id, event) for event in write.events]

        def transaction(conn: sqlite3.Connection) -> str | None:
            status_to_store = new_status
            if write.status is Status.PAUSED:
                # Rare (a pause settling): the pending request decides the stored status.
                row = conn.execute(sql.SELECT_REQUEST, (instance_id, token)).fetchone()
                pending = ControlRequest(row[0]) if row is not None and row[0] else None
                status_to_store = settled_status(write.status, pending).value
            rows = conn.execute(sql.COMMIT_RECORD, params).fetchall()
            if not rows:
                raise sql.refusal(conn, instance_id, token)
            status, request = rows[0]
            assert request is None or isinstance(request, str)
            if status != status_to_store:
                conn.execute(sql.SET_STATUS, (status_to_store, instance_id))
            for key, payload in write.checkpoints:
                try:
                    conn.execute(sql.INSERT_CHECKPOINT, (instance_id, key, payload))
                except sqlite3.IntegrityError as exc:
                    if exc.sqlite_errorname != "SQLITE_CONSTRAINT_UNIQUE":
                        raise
                    raise LeaseLostError(
                        f"instance {instance_id!r}: step {key!r} is already checkpointed"
                    ) from exc
            if write.consumed_signal is not None:
                conn.execute(sql.DELETE_SIGNAL, (write.consumed_signal, instance_id))
            # One execute each: executemany's setup costs more than it saves on one or
            # two rows, a step's usual count.
            for event in events:
                conn.execute(sql.INSERT_EVENT, event)
            return request

        request = await self._write("commit", transaction)
        if write.status.is_terminal:
            self._finished.notify(instance_id)
        return ControlRequest(request) if request is not None else None

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        def transaction(conn: sqlite3.Connection) -> InstanceRecord:
            record = sql.require_record(conn, instance_id)
            updated, events = apply_control_request(record, request, reason, by, now)
            sql.save_record(conn, record, updated, events)
            return updated

        updated = await self._write(str(request), transaction)
        if updated.status.is_terminal:
            self._finished.notify(instance_id)
        return updated

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        def transaction(conn: sqlite3.Connection) -> InstanceRecord:
            record = sql.require_record(conn, instance_id)
            updated, events = apply_unpause(record, now)
            sql.save_record(conn, record, updated, events)
            return updated

        updated = await self._write("unpause", transaction)
        self._notifier.notify()
        return updated

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        def transaction(conn: sqlite3.Connection) -> bool:
            record = sql.require_record(conn, instance_id)
            check_signal_target(record, name)
            (buffered,) = conn.execute(sql.COUNT_SIGNALS, (instance_id,)).fetchone()
            check_signal_room(record, name, buffered)
            conn.execute(sql.INSERT_SIGNAL, (instance_id, name, payload, now))
            updated = (
                dataclasses.replace(record, wake_at=now) if signal_wakes(record, name) else record
            )
            event = HistoryEvent("signal_sent", now, detail={"name": name})
            sql.save_record(conn, record, updated, [event])
            return updated is not record

        if await self._write("send_signal", transaction):
            self._notifier.notify()

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        def read(conn: sqlite3.Connection) -> BufferedSignal | None:
            row = conn.execute(sql.NEXT_SIGNAL, (instance_id, name)).fetchone()
            return BufferedSignal(row[0], row[1], bytes(row[2])) if row is not None else None

        return await self._run("next_signal", None, read)

    async def list_instances(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstancePage:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        after = decode_cursor(cursor)
        query = sql.list_query(
            by_status=status is not None,
            by_workflow=workflow_id is not None,
            after=after is not None,
        )
        params = {
            "status": str(status) if status is not None else None,
            "workflow_id": workflow_id,
            "after": after,
            # One row more than asked tells whether another page exists.
            "limit": limit + 1,
        }

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(query, params).fetchall()

        rows = await self._run("list_instances", None, read)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
        return InstancePage([record_from_row(row[1:]) for row in page], next_cursor)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        def transaction(conn: sqlite3.Connection) -> list[HistoryEvent]:
            rows = conn.execute(sql.SELECT_EVENTS, (instance_id,)).fetchall()
            # Every instance has a "started" event, so no rows usually means no instance.
            if not rows and conn.execute(sql.INSTANCE_EXISTS, (instance_id,)).fetchone() is None:
                raise missing(instance_id)
            return [event_from_row(row) for row in rows]

        return await self._run("history", "BEGIN", transaction)

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        def transaction(conn: sqlite3.Connection) -> InstanceRecord:
            record = sql.require_record(conn, instance_id)
            written = conn.execute(sql.SELECT_CHECKPOINT_SEQS, (instance_id,)).fetchall()
            updated, keep, event = apply_reset(record, [key for _, key in written], task_id, now)
            if keep < len(written):
                conn.execute(sql.DELETE_CHECKPOINTS_FROM, (instance_id, written[keep][0]))
            sql.save_record(conn, record, updated, [event])
            return updated

        updated = await self._write("retry_from", transaction)
        self._notifier.notify()
        return updated

    # -- BackendStats (see backends/stats.py): one read each ----------------------------

    async def count_by_status(self) -> dict[Status, int]:
        return await self._run("count_by_status", "BEGIN", stats.count_by_status)

    async def ready_backlog(self, now: float) -> ReadyBacklog:
        return await self._run(
            "ready_backlog", "BEGIN", functools.partial(stats.ready_backlog, now=now)
        )
