"""``SqliteBackend``: the backend contract on one SQLite file, durable and embedded.

The file is opened in WAL mode with ``synchronous=FULL`` by default, so a step that
``commit`` returned from survives a power cut. Several processes may share the file:
every write runs in ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two
writers queue on ``busy_timeout`` instead of failing on a lock upgrade), and claim
tokens fence out a worker whose lease was taken over.

The methods are ``async`` but call ``sqlite3`` directly: a local commit, fsync included,
takes a fraction of a millisecond, and a hop to a thread pool would add as much again.
One connection per backend object, guarded by a lock, lets threads and event loops
share it.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from pathlib import Path

from sayiir_core.backends import _sqlite_sql as sql
from sayiir_core.backends._rows import event_from_row, record_from_row
from sayiir_core.backends._sqlite_schema import migrate
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
    OpensAndCloses,
    StepWrite,
)
from sayiir_core.backends.notify import FinishWatch, notifiers_for
from sayiir_core.backends.rules import (
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_target,
    decode_cursor,
    encode_cursor,
    is_claimable,
    missing,
    new_record,
    settled_status,
    terminated_record,
)
from sayiir_core.errors import BackendError, InstanceAlreadyExistsError, LeaseLostError
from sayiir_core.status import Status

SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
# How often a client waiting for a result re-reads the instance (see watch_finish).
_FINISH_POLL_INTERVAL = 0.05
# RETURNING (3.35) lets commit fence, write and read the pending request in one statement.
_MIN_SQLITE = (3, 35, 0)


class SqliteBackend(OpensAndCloses):
    """A durable backend in one SQLite file; the default for the CLI and examples.

    ``synchronous`` is SQLite's durability setting: ``FULL`` (default) syncs the WAL on
    every commit; ``NORMAL`` is faster but a power cut may lose the last steps (never
    corrupt the file); ``EXTRA`` is ``FULL`` plus SQLite's extra directory syncs.
    ``busy_timeout`` is how many seconds a write waits for another process's transaction
    before failing.

    The engine opens the backend on first use (``open()`` creates the file and its
    directory and migrates the schema); call ``close()`` when done.

    Example::

        backend = SqliteBackend("var/sayiir.db")
        status = run_durable_workflow(wf, "order-1", {"id": 1}, backend=backend)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        # Absolute now, so messages name the real file and a later chdir changes nothing.
        self._path = Path(path).absolute()
        self._synchronous = mode
        self._busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        notifiers = notifiers_for(self._path)
        self._notifier, self._finished = notifiers.work, notifiers.finish

    def __repr__(self) -> str:
        return f"SqliteBackend({str(self._path)!r}, synchronous={self._synchronous!r})"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        """Create the file and its directory if needed, then apply pending migrations."""
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise self._error("close", exc) from exc

    async def wait_for_work(self, max_wait: float) -> None:
        # Wakes at once for work made runnable in this process; other processes' work
        # is found when the timeout (the worker's poll interval) runs out.
        await self._notifier.wait(max_wait)

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        # Finishes in this process fire the watch; another process's are seen by the
        # waiter's next read, so it reads often (a local read costs tens of µs).
        return self._finished.watch(instance_id, _FINISH_POLL_INTERVAL)

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        with self._write("create") as conn:
            row = conn.execute(sql.SELECT_RECORD, (new.instance_id,)).fetchone()
            if row is None:
                record, started = new_record(new)
                events = [started]
            else:
                existing = record_from_row(row)
                if policy is ConflictPolicy.USE_EXISTING:
                    return existing, False
                if policy is ConflictPolicy.FAIL:
                    raise InstanceAlreadyExistsError(
                        f"workflow instance {new.instance_id!r} already exists "
                        f"(status {existing.status})"
                    )
                record, started = new_record(new, replaces=existing)
                events = [terminated_record(new.now), started]
                # Delete and re-insert rather than update: the new row gets a new seq,
                # so it lists as the newest instance, like any other fresh submission.
                for statement in (sql.DELETE_INSTANCE, sql.DELETE_CHECKPOINTS, sql.DELETE_SIGNALS):
                    conn.execute(statement, (new.instance_id,))
            conn.execute(sql.INSERT_RECORD, sql.record_params(record))
            self._append(conn, new.instance_id, events)
        if record.status is Status.PENDING:
            self._notifier.notify()
        return record, True

    async def load(self, instance_id: str) -> LoadedInstance | None:
        # One read transaction, so the record and its checkpoints are the same snapshot.
        with self._session("load", "BEGIN") as conn:
            row = conn.execute(sql.SELECT_RECORD, (instance_id,)).fetchone()
            if row is None:
                return None
            checkpoints = self._checkpoints(conn, instance_id)
        return LoadedInstance(record_from_row(row), checkpoints)

    async def get_record(self, instance_id: str) -> InstanceRecord | None:
        with self._session("get_record") as conn:
            row = conn.execute(sql.SELECT_RECORD, (instance_id,)).fetchone()
        return record_from_row(row) if row is not None else None

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        with self._session("get_checkpoint") as conn:
            row = conn.execute(sql.SELECT_CHECKPOINT, (instance_id, key)).fetchone()
        return bytes(row[0]) if row is not None else None

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        with self._write("claim") as conn:
            rows = conn.execute(sql.CLAIM, (owner, now + ttl, instance_id)).fetchall()
            if not rows:
                raise missing(instance_id)
            checkpoints = self._checkpoints(conn, instance_id)
        record = record_from_row(rows[0])
        return Claim(LoadedInstance(record, checkpoints), record.claim_token)

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        if limit < 1 or not workflows:
            return []
        query = sql.claimable_query(len(workflows))
        params = sql.claimable_params(workflows, now, limit)
        # Idle workers poll often: look first without the write lock, so an empty poll
        # never makes a committing worker wait. The query runs again under the lock.
        with self._session("claim_next") as conn:
            if not conn.execute(query, {**params, "limit": 1}).fetchall():
                return []
        with self._write("claim_next") as conn:
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
                Claim(LoadedInstance(r, self._checkpoints(conn, r.instance_id)), r.claim_token)
                for r in taken
            ]

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        with self._write("renew") as conn:
            cursor = conn.execute(sql.RENEW, (now + ttl, instance_id, token))
            return cursor.rowcount == 1

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        # Encode everything before taking the lock: a bad value fails with nothing begun.
        params = sql.commit_params(instance_id, token, write)
        events = [sql.event_params(instance_id, event) for event in write.events]
        with self._write("commit") as conn:
            if write.status is Status.PAUSED:
                # Rare (a pause settling): the pending request decides the stored status.
                row = conn.execute(sql.SELECT_REQUEST, (instance_id, token)).fetchone()
                pending = ControlRequest(row[0]) if row is not None and row[0] else None
                params["status"] = settled_status(write.status, pending).value
            rows = conn.execute(sql.COMMIT_RECORD, params).fetchall()
            if not rows:
                raise self._refused(conn, instance_id, token)
            status, request = rows[0]
            if status != params["status"]:
                conn.execute(sql.SET_STATUS, (params["status"], instance_id))
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
            if events:
                conn.executemany(sql.INSERT_EVENT, events)
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
        with self._write(str(request)) as conn:
            record = self._require(conn, instance_id)
            updated, events = apply_control_request(record, request, reason, by, now)
            self._save(conn, record, updated, events)
        if updated.status.is_terminal:
            self._finished.notify(instance_id)
        return updated

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        with self._write("unpause") as conn:
            record = self._require(conn, instance_id)
            updated, events = apply_unpause(record, now)
            self._save(conn, record, updated, events)
        self._notifier.notify()
        return updated

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        with self._write("send_signal") as conn:
            record = self._require(conn, instance_id)
            check_signal_target(record, name)
            conn.execute(sql.INSERT_SIGNAL, (instance_id, name, payload, now))
            updated = (
                dataclasses.replace(record, wake_at=now)
                if record.status is Status.AWAITING_SIGNAL
                else record
            )
            event = HistoryEvent("signal_sent", now, detail={"name": name})
            self._save(conn, record, updated, [event])
        if updated is not record:
            self._notifier.notify()

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        with self._session("next_signal") as conn:
            row = conn.execute(sql.NEXT_SIGNAL, (instance_id, name)).fetchone()
        return BufferedSignal(row[0], row[1], bytes(row[2])) if row is not None else None

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
        with self._session("list_instances") as conn:
            rows = conn.execute(query, params).fetchall()
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
        return InstancePage([record_from_row(row[1:]) for row in page], next_cursor)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        with self._session("history", "BEGIN") as conn:
            rows = conn.execute(sql.SELECT_EVENTS, (instance_id,)).fetchall()
            # Every instance has a "started" event, so no rows usually means no instance.
            if not rows and conn.execute(sql.INSTANCE_EXISTS, (instance_id,)).fetchone() is None:
                raise missing(instance_id)
        return [event_from_row(row) for row in rows]

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        with self._write("retry_from") as conn:
            record = self._require(conn, instance_id)
            written = conn.execute(sql.SELECT_CHECKPOINT_SEQS, (instance_id,)).fetchall()
            updated, keep, event = apply_reset(record, [key for _, key in written], task_id, now)
            if keep < len(written):
                conn.execute(sql.DELETE_CHECKPOINTS_FROM, (instance_id, written[keep][0]))
            self._save(conn, record, updated, [event])
        self._notifier.notify()
        return updated

    # -- connection and transactions ------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise BackendError(
                f"SqliteBackend needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}; this "
                f"Python is linked against SQLite {sqlite3.sqlite_version}"
            )
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"cannot create the directory for SQLite database {self._path}: {exc}"
            ) from exc
        try:
            # isolation_level=None: no implicit BEGIN; every transaction here is explicit.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise BackendError(
                    f"SQLite database {self._path}: cannot use WAL journal mode "
                    f"(SQLite answered {mode!r}); is it on a network or read-only filesystem?"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            migrate(conn, time.time())
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open", exc) from exc
            raise
        return conn

    @contextmanager
    def _session(self, action: str, begin: str | None = None) -> Iterator[sqlite3.Connection]:
        """Hold the connection for one operation, inside ``begin`` ... COMMIT if given.

        Any exception rolls back; ``sqlite3`` errors surface as ``BackendError``.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise BackendError(
                    f"SqliteBackend({str(self._path)!r}) is not open; call open() first"
                )
            try:
                if begin is not None:
                    conn.execute(begin)
                yield conn
                if begin is not None:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                sql.rollback(conn, exc)
                raise self._error(action, exc) from exc
            except BaseException as exc:
                sql.rollback(conn, exc)
                raise

    def _write(self, action: str) -> AbstractContextManager[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at BEGIN: a deferred transaction that later
        # upgrades can fail with SQLITE_BUSY at once instead of waiting busy_timeout.
        return self._session(action, "BEGIN IMMEDIATE")

    def _error(self, action: str, exc: sqlite3.Error) -> BackendError:
        text = str(exc)
        if "not a database" in text:
            return BackendError(f"{self._path} is not a SQLite database ({text})")
        if "locked" in text or "busy" in text:
            text += (
                f"; another connection held the write lock longer than "
                f"busy_timeout={self._busy_timeout:g}s"
            )
        return BackendError(f"SQLite database {self._path}: {action} failed: {text}")

    # -- helpers used inside a transaction ------------------------------------------

    @staticmethod
    def _require(conn: sqlite3.Connection, instance_id: str) -> InstanceRecord:
        row = conn.execute(sql.SELECT_RECORD, (instance_id,)).fetchone()
        if row is None:
            raise missing(instance_id)
        return record_from_row(row)

    @staticmethod
    def _checkpoints(conn: sqlite3.Connection, instance_id: str) -> dict[str, bytes]:
        rows = conn.execute(sql.SELECT_CHECKPOINTS, (instance_id,))
        return {key: bytes(payload) for key, payload in rows}

    @staticmethod
    def _append(conn: sqlite3.Connection, instance_id: str, events: Sequence[HistoryEvent]) -> None:
        if events:
            conn.executemany(sql.INSERT_EVENT, [sql.event_params(instance_id, e) for e in events])

    def _save(
        self,
        conn: sqlite3.Connection,
        before: InstanceRecord,
        after: InstanceRecord,
        events: Sequence[HistoryEvent],
    ) -> None:
        if after != before:
            conn.execute(sql.UPDATE_RECORD, sql.record_params(after))
        self._append(conn, after.instance_id, events)

    @staticmethod
    def _refused(conn: sqlite3.Connection, instance_id: str, token: int) -> Exception:
        """Why a fenced write matched no row: no such instance, or the claim moved on."""
        row = conn.execute(sql.SELECT_TOKEN, (instance_id,)).fetchone()
        if row is None:
            return missing(instance_id)
        return LeaseLostError(
            f"instance {instance_id!r}: claim {token} was taken over "
            f"(current claim {row[0]}); write refused"
        )
