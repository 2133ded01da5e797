"""``PostgresBackend``: the backend contract on PostgreSQL, for a fleet of workers.

Built on asyncpg. The hot paths are single statements: a step's ``commit`` (fence,
record, checkpoints, history, consumed signal, wake-up) is one statement and so one
round trip and one transaction; ``claim_next`` is one ``FOR UPDATE SKIP LOCKED``
statement plus one read of the claimed instances' checkpoints. Idle workers wake on
``LISTEN/NOTIFY`` and fall back to polling. The schema migrates itself on ``open()``.
The shared step queue and the control operations (cancel, pause, signals, retry) are
objects the backend owns and delegates to: ``PostgresStepQueue``, ``PostgresControl``.

Needs the ``postgres`` extra (``pip install 'sayiir-py[postgres]'``) and PostgreSQL 14+.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg

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
from sayiir_core.backends.notify import FinishWatch
from sayiir_core.backends.postgres import convert, stats
from sayiir_core.backends.postgres import statements as sql
from sayiir_core.backends.postgres.address import split_schema_option
from sayiir_core.backends.postgres.control import PostgresControl, read_record
from sayiir_core.backends.postgres.listen import FinishListener, WorkListener
from sayiir_core.backends.postgres.options import PoolOptions
from sayiir_core.backends.postgres.schema import check_schema_name, migrate_pool
from sayiir_core.backends.postgres.session import Attempt, Done, Session
from sayiir_core.backends.postgres.step_queue import (
    PostgresStepQueue,
    StepQueueByDelegation,
    ticket_columns,
)
from sayiir_core.backends.rows import event_from_row, record_from_row
from sayiir_core.backends.rules import (
    decode_cursor,
    encode_cursor,
    is_submission_of,
    keeps_existing,
    missing,
    new_record,
)
from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.backends.step_queue import (
    StepTicket,
)
from sayiir_core.errors import BackendError, LeaseLostError
from sayiir_core.status import Status

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Conn

# How often a client waiting for a result re-reads the instance (see watch_finish).
_FINISH_POLL_INTERVAL = 1.0
# A conflicting create races with deletes and inserts of the same id at most this often.
_CREATE_ROUNDS = 5


class PostgresBackend(StepQueueByDelegation, OpensAndCloses):
    """A durable backend in a PostgreSQL schema, shared by any number of workers.

    ``url`` is a libpq-style URL (``postgresql://user:password@host:5432/db``); a
    ``?schema=name`` option in it is the same as ``schema=``. Tables live in ``schema``
    (created and migrated on ``open()``), so several apps or test runs can share a
    database.

    The keywords of Sayiir 1.0's ``PostgresBackend``, each ``None`` for its default:
    ``max_connections`` (20) and ``min_connections`` (2) bound the pool (plus, per
    backend, one LISTEN connection once a worker waits for work, one once it waits
    for shared steps and one once a client waits for a result);
    ``acquire_timeout_secs`` (30) is how long an operation waits for a pooled
    connection; ``idle_timeout_secs`` (600) closes connections idle that long;
    ``max_lifetime_secs`` (1800) replaces a pooled connection that old when it is next
    acquired; ``statement_timeout_secs`` and ``idle_in_transaction_session_timeout_secs``
    (the server's defaults) set those PostgreSQL settings on every connection.
    ``min_size``/``max_size`` are older names for the two sizes.

    Beyond Sayiir: ``command_timeout`` bounds each statement on the client side;
    ``connect_timeout`` bounds making a connection; ``max_payload_bytes`` caps any one
    input, output, checkpoint or signal payload (larger ones fail with
    ``BackendError`` before anything is written).

    The pool belongs to the event loop that opened the backend: use one backend object
    per event loop. After ``os.fork()`` call ``open()`` in the child: it forgets the
    parent's connections without disturbing them and connects anew. Do not put
    PgBouncer in transaction mode in front of it (prepared statements and LISTEN need
    a session).

    Example::

        backend = PostgresBackend("postgresql://app:secret@db/app", schema="orders")
        worker = Worker("worker-1", backend)
        await worker.run([checkout])
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int | None = None,
        min_connections: int | None = None,
        acquire_timeout_secs: float | None = None,
        idle_timeout_secs: float | None = None,
        max_lifetime_secs: float | None = None,
        statement_timeout_secs: float | None = None,
        idle_in_transaction_session_timeout_secs: float | None = None,
        schema: str = "sayiir",
        min_size: int | None = None,
        max_size: int | None = None,
        command_timeout: float | None = 30.0,
        max_payload_bytes: int = 16 * 1024 * 1024,
        connect_timeout: float = 10.0,
    ) -> None:
        url, schema = split_schema_option(url, schema)
        self._schema = check_schema_name(schema)
        if max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be >= 1, not {max_payload_bytes!r}")
        self._max_payload = max_payload_bytes
        self._sql = sql.Statements(self._schema)
        options = PoolOptions.from_keywords(
            max_connections=max_connections,
            min_connections=min_connections,
            acquire_timeout_secs=acquire_timeout_secs,
            idle_timeout_secs=idle_timeout_secs,
            max_lifetime_secs=max_lifetime_secs,
            statement_timeout_secs=statement_timeout_secs,
            idle_in_transaction_session_timeout_secs=idle_in_transaction_session_timeout_secs,
            max_size=max_size,
            min_size=min_size,
        )
        self._session = Session(
            url, options=options, command_timeout=command_timeout, connect_timeout=connect_timeout
        )
        self._address = self._session.address
        self._listener = WorkListener(self._session.connect, self._sql.channel)
        self._finish_listener = FinishListener(self._session.connect, self._sql.done_channel)
        self._session.on_fork(self._listener.drop_inherited)
        self._session.on_fork(self._finish_listener.drop_inherited)
        self._steps = PostgresStepQueue(
            self._session, self._schema, self._sql.channel, max_payload_bytes
        )
        self._control = PostgresControl(
            self._session, self._sql, self._steps.statements, max_payload_bytes
        )

    def __repr__(self) -> str:
        return f"PostgresBackend({self._address}, schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this backend's tables."""
        return self._schema

    async def open(self) -> None:
        """Connect and apply pending migrations; idempotent and safe to call concurrently.

        In a process forked after this backend was opened, first forgets the parent's
        pool and LISTEN connections (sending nothing on them) and connects anew.
        """
        await self._session.open(self._migrate)

    async def close(self) -> None:
        """Close the LISTEN connections and the pool; ``open()`` may be called again.

        In a forked child that has not opened it, only forgets the parent's connections.
        """
        self._session.check_closable()
        self._session.adopt()  # in a forked child: drop the parent's, close nothing of it
        await self._listener.close()
        await self._steps.close()
        await self._finish_listener.close()
        await self._session.close()

    async def wait_for_work(self, max_wait: float) -> None:
        # Wakes on NOTIFY from any process; sleeps out max_wait while LISTEN is down.
        self._session.pool()
        await self._listener.wait(max_wait)

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        # NOTIFY from the finishing commit, in any process, fires the watch; the re-read
        # is the backstop for a lost LISTEN connection.
        self._session.pool()
        return self._finish_listener.watch(instance_id, _FINISH_POLL_INTERVAL)

    def hold_connection(self) -> AbstractAsyncContextManager[None]:
        """Within this block, the task's statements keep one pooled connection between
        them instead of acquiring one each (``DurableRunner`` wraps a run in it). It is
        given back whenever another operation needs it; see ``holds.py``."""
        return self._session.hold()

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        self._check_size(new.input, f"the input of workflow instance {new.instance_id!r}")
        fresh, started = new_record(new)

        async def body(conn: Conn, attempt: Attempt) -> tuple[InstanceRecord, bool]:
            for _ in range(_CREATE_ROUNDS):
                if await attempt.write(
                    conn, self._sql.insert_record, *self._insert(fresh, 0, [started])
                ):
                    return fresh, True
                existing = await read_record(conn, self._sql, new.instance_id)
                if existing is None:
                    continue  # deleted since the insert: try again
                if keeps_existing(existing, policy):
                    return existing, False
                replaced = await self._control.replace(conn, attempt, new)
                if replaced is not None:
                    return replaced, True
            raise BackendError(f"create {new.instance_id!r}: the id kept changing under us")

        async def resolve(conn: Conn) -> Done[tuple[InstanceRecord, bool]] | None:
            # Ours if it carries this submission's identity, input and creation time.
            stored = await read_record(conn, self._sql, new.instance_id)
            return (
                Done((stored, True))
                if stored is not None and is_submission_of(stored, new)
                else None
            )

        return await self._session.run("create", body, resolve=resolve)

    async def load(self, instance_id: str) -> LoadedInstance | None:
        async def body(conn: Conn, _: Attempt) -> LoadedInstance | None:
            row = await conn.fetchrow(self._sql.load, instance_id)
            if row is None:
                return None
            record = record_from_row(tuple(row)[: sql.RECORD_WIDTH])
            checkpoints = convert.checkpoints_from(row["keys"], row["payloads"])
            return LoadedInstance(record, checkpoints)

        return await self._session.run("load", body, idempotent=True)

    async def get_record(self, instance_id: str) -> InstanceRecord | None:
        async def body(conn: Conn, _: Attempt) -> InstanceRecord | None:
            return await read_record(conn, self._sql, instance_id)

        return await self._session.run("get_record", body, idempotent=True)

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        async def body(conn: Conn, _: Attempt) -> bytes | None:
            payload: bytes | None = await conn.fetchval(
                self._sql.select_checkpoint, instance_id, key
            )
            return payload

        return await self._session.run("get_checkpoint", body, idempotent=True)

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        async def body(conn: Conn, attempt: Attempt) -> Claim:
            rows = await attempt.write(conn, self._sql.claim, instance_id, owner, now + ttl)
            if not rows:
                raise missing(instance_id)
            (claim,) = await self._claims(conn, rows)
            return claim

        async def resolve(conn: Conn) -> Done[Claim] | None:
            # Claiming again is harmless once the lost attempt is settled: it only
            # bumps the token once more, and we return the newest.
            return None

        return await self._session.run("claim", body, resolve=resolve)

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        if limit < 1 or not workflows:
            return []
        lease_until = now + ttl

        async def body(conn: Conn, attempt: Attempt) -> list[Claim]:
            rows = await attempt.write(
                conn,
                self._sql.claim_next,
                list(workflows),
                list(workflows.values()),
                now,
                limit,
                owner,
                lease_until,
            )
            return await self._claims(conn, rows)

        async def resolve(conn: Conn) -> Done[list[Claim]] | None:
            # Claims carry our owner id and this call's exact lease: find any we took,
            # so they run now instead of sitting out a whole lease unclaimed.
            rows = [
                row
                for row in await conn.fetch(self._sql.claimed_by, owner, lease_until)
                if workflows.get(row["workflow_id"]) == row["definition_hash"]
            ]
            return Done(await self._claims(conn, rows)) if rows else None

        return await self._session.run("claim_next", body, resolve=resolve)

    async def _claims(self, conn: Conn, rows: Sequence[Any]) -> list[Claim]:
        # The checkpoints are read by a second statement on purpose: a statement sees the
        # database as of its start, and a claim can wait on (then follow) a commit by the
        # previous owner whose checkpoint that snapshot would miss.
        if not rows:
            return []
        ids = [row["instance_id"] for row in rows]
        return convert.claims_from(rows, await conn.fetch(self._sql.checkpoints_of, ids))

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        async def body(conn: Conn, attempt: Attempt) -> bool:
            return bool(await attempt.write(conn, self._sql.renew, instance_id, token, now + ttl))

        # Setting the same lease twice is the same as once.
        return await self._session.run("renew", body, idempotent=True)

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        return await self._fenced_commit("commit", self._sql.commit, instance_id, token, write)

    async def _fenced_commit(
        self,
        label: str,
        statement: str,
        instance_id: str,
        token: int,
        write: StepWrite,
        tickets: Sequence[StepTicket] | None = None,
    ) -> ControlRequest | None:
        """Send ``statement`` (the commit, or with ``tickets`` the commit that also queues
        them, even none) fenced by ``token``, resolving a lost reply."""
        # Everything is checked and encoded before the statement is sent: a refused
        # write leaves nothing behind.
        convert.check_write(instance_id, write, tickets or (), self._max_payload)
        keys = [key for key, _ in write.checkpoints]
        # A random id written with the step: after a lost connection it says for certain
        # whether this commit was applied (checkpoint keys cannot tell for a step
        # without checkpoints, nor updated_at on a coarse clock).
        commit_id = secrets.randbits(63)
        params = convert.commit_params(
            instance_id, token, write, commit_id, self._sql.channel, self._sql.done_channel
        )
        if tickets is not None:
            params.extend(ticket_columns(tickets))

        async def body(conn: Conn, attempt: Attempt) -> ControlRequest | None:
            try:
                rows = await attempt.write(conn, statement, *params)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "sayiir_checkpoints_pkey":
                    raise
                key = await conn.fetchval(self._sql.existing_keys, instance_id, keys)
                raise LeaseLostError(
                    f"instance {instance_id!r}: step {key!r} is already checkpointed"
                ) from None
            if not rows:
                raise await self._refused(conn, instance_id, token)
            return convert.control_request(rows[0]["control_request"])

        async def resolve(conn: Conn) -> Done[ControlRequest | None] | None:
            row = await conn.fetchrow(self._sql.commit_outcome, instance_id)
            if row is None:
                raise missing(instance_id)
            if row["last_commit"] == commit_id:
                return Done(convert.control_request(row["control_request"]))
            if row["claim_token"] != token or row["owner"] is None:
                raise convert.lease_lost(instance_id, token, row["claim_token"])
            return None  # not applied, and the claim is still ours: send it again

        return await self._session.run(label, body, resolve=resolve)

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        return await self._control.request_control(instance_id, request, reason, by, now)

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        return await self._control.unpause(instance_id, now)

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        await self._control.send_signal(instance_id, name, payload, now)

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        return await self._control.reset_from(instance_id, task_id, now)

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        async def body(conn: Conn, _: Attempt) -> BufferedSignal | None:
            row = await conn.fetchrow(self._sql.next_signal, instance_id, name)
            return BufferedSignal(row[0], row[1], row[2]) if row is not None else None

        return await self._session.run("next_signal", body, idempotent=True)

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
        query = self._sql.list_query(
            by_status=status is not None,
            by_workflow=workflow_id is not None,
            after=after is not None,
        )
        # One row more than asked tells whether another page exists.
        params = [p for p in (status, workflow_id, after) if p is not None] + [limit + 1]
        params = [str(p) if isinstance(p, Status) else p for p in params]

        async def body(conn: Conn, _: Attempt) -> list[Any]:
            return list(await conn.fetch(query, *params))

        rows = await self._session.run("list_instances", body, idempotent=True)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
        return InstancePage([record_from_row(tuple(row)[1:]) for row in page], next_cursor)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        async def body(conn: Conn, _: Attempt) -> list[HistoryEvent]:
            rows = await conn.fetch(self._sql.select_events, instance_id)
            # Every instance has a "started" event, so no rows usually means no instance.
            if not rows and await conn.fetchval(self._sql.instance_exists, instance_id) is None:
                raise missing(instance_id)
            return [event_from_row(tuple(row)) for row in rows]

        return await self._session.run("history", body, idempotent=True)

    # -- AdvanceQueue: the one method that needs the backend's fenced commit ------------

    async def commit_and_publish(
        self, instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        statement = self._steps.commit_and_publish_statement
        return await self._fenced_commit(
            "commit_and_publish", statement, instance_id, token, write, tickets
        )

    # -- helpers ----------------------------------------------------------------------

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        await migrate_pool(pool, self._schema, self._session)

    def _check_size(self, payload: bytes, what: str) -> None:
        convert.check_size(payload, self._max_payload, what)

    def _insert(
        self, record: InstanceRecord, history_seq: int, events: Sequence[HistoryEvent]
    ) -> list[Any]:
        return convert.insert_params(record, history_seq, events, self._sql.channel)

    async def _refused(self, conn: Conn, instance_id: str, token: int) -> Exception:
        """Why a fenced write matched no row: no such instance, or the claim moved on."""
        current = await conn.fetchval(self._sql.select_token, instance_id)
        if current is None:
            return missing(instance_id)
        return convert.lease_lost(instance_id, token, current)

    # -- BackendStats (see backends/stats.py): one statement each -----------------------

    async def count_by_status(self) -> dict[Status, int]:
        return await stats.count_by_status(self._session, self._stats_sql)

    async def ready_backlog(self, now: float) -> ReadyBacklog:
        return await stats.ready_backlog(self._session, self._stats_sql, now)

    @functools.cached_property
    def _stats_sql(self) -> stats.StatsStatements:
        return stats.StatsStatements(self._schema)
