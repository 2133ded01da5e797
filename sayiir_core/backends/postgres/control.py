"""``PostgresControl``: the operator's side of ``PostgresBackend``, owned and delegated to.

Cancel and pause requests, unpause, signals, ``retry_from`` (``reset_from``) and the
replacement of an instance by ``terminate_existing``: each locks the instance's row in
a short transaction (or is one statement) and applies the shared rules of
``backends.rules``, so every backend decides these cases alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sayiir_core.backends.base import ControlRequest, InstanceRecord, NewInstance
from sayiir_core.backends.postgres import convert
from sayiir_core.backends.postgres import statements as sql
from sayiir_core.backends.postgres.session import Attempt, Session
from sayiir_core.backends.postgres.step_queue import StepStatements
from sayiir_core.backends.rows import record_from_row
from sayiir_core.backends.rules import (
    MAX_BUFFERED_SIGNALS,
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_target,
    missing,
    new_record,
    signal_buffer_full,
    terminated_record,
)
from sayiir_core.status import Status

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Conn


async def read_record(
    conn: Conn, statements: sql.Statements, instance_id: str
) -> InstanceRecord | None:
    row = await conn.fetchrow(statements.select_record, instance_id)
    return record_from_row(tuple(row)) if row is not None else None


async def lock_record(conn: Conn, statements: sql.Statements, instance_id: str) -> InstanceRecord:
    """The record, locked ``FOR UPDATE`` until the transaction ends; missing: an error."""
    row = await conn.fetchrow(statements.lock_record, instance_id)
    if row is None:
        raise missing(instance_id)
    return record_from_row(tuple(row))


class PostgresControl:
    """Control operations on ``session`` with the backend's statements."""

    def __init__(
        self,
        session: Session,
        statements: sql.Statements,
        step_statements: StepStatements,
        max_payload: int,
    ) -> None:
        self._session = session
        self._sql = statements
        self._steps_sql = step_statements
        self._max_payload = max_payload

    async def replace(
        self, conn: Conn, attempt: Attempt, new: NewInstance
    ) -> InstanceRecord | None:
        """terminate_existing: replace the instance, keeping its history and token line."""
        async with attempt.transaction(conn):
            row = await conn.fetchrow(self._sql.lock_record, new.instance_id)
            if row is None:
                return None
            existing = record_from_row(tuple(row))
            record, started = new_record(new, replaces=existing)
            # Delete and re-insert rather than update: the new row gets a new seq, so it
            # lists as the newest instance, like any other fresh submission.
            history_seq = await conn.fetchval(self._sql.delete_instance, new.instance_id)
            await conn.execute(self._sql.delete_checkpoints, new.instance_id)
            await conn.execute(self._sql.delete_signals, new.instance_id)
            events = [terminated_record(new.now), started]
            await conn.execute(
                self._sql.insert_record,
                *convert.insert_params(record, history_seq, events, self._sql.channel),
            )
        return record

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        async def body(conn: Conn, attempt: Attempt) -> InstanceRecord:
            async with attempt.transaction(conn):
                record = await lock_record(conn, self._sql, instance_id)
                updated, events = apply_control_request(record, request, reason, by, now)
                if updated != record or events:
                    await conn.execute(
                        self._sql.save_record, *convert.save_params(updated, events, None)
                    )
                if updated.status.is_terminal:  # cancelled at once: nobody checkpoints
                    await conn.execute(self._steps_sql.delete_of_instance, instance_id)
                    await conn.execute(self._sql.notify_done, self._sql.done_channel, instance_id)
            return updated

        return await self._session.run(str(request), body)

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        async def body(conn: Conn, attempt: Attempt) -> InstanceRecord:
            async with attempt.transaction(conn):
                record = await lock_record(conn, self._sql, instance_id)
                updated, events = apply_unpause(record, now)
                wake = self._sql.channel if updated.status is Status.PENDING else None
                await conn.execute(
                    self._sql.save_record, *convert.save_params(updated, events, wake)
                )
            return updated

        return await self._session.run("unpause", body)

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        convert.check_size(
            payload, self._max_payload, f"signal {name!r} for workflow instance {instance_id!r}"
        )
        detail = convert.signal_detail(name)
        args = (instance_id, name, payload, now, detail, self._sql.channel, MAX_BUFFERED_SIGNALS)

        # One statement counts the buffered signals and inserts (one round trip), but
        # on its snapshot: a sender that committed while it waited for the row lock is
        # not counted. So it writes only if the row it locked is the version its
        # snapshot saw (every send and consume rewrites that row); else, and when it
        # writes nothing for any reason, the row is locked first in a transaction and
        # the statement runs on a snapshot taken after it: exact count, exact reason.
        async def body(conn: Conn, attempt: Attempt) -> None:
            if await attempt.write(conn, self._sql.send_signal, *args):
                return
            attempt.in_doubt = False  # the statement completed and wrote nothing
            async with attempt.transaction(conn):
                record = await lock_record(conn, self._sql, instance_id)
                check_signal_target(record, name)
                if not await conn.fetch(self._sql.send_signal, *args):
                    raise signal_buffer_full(instance_id, name)  # found, unfinished: full

        await self._session.run("send_signal", body)

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        async def body(conn: Conn, attempt: Attempt) -> InstanceRecord:
            async with attempt.transaction(conn):
                record = await lock_record(conn, self._sql, instance_id)
                written = await conn.fetch(self._sql.checkpoint_seqs, instance_id)
                keys = [row["step_key"] for row in written]
                updated, keep, event = apply_reset(record, keys, task_id, now)
                if keep < len(written):
                    await conn.execute(
                        self._sql.delete_checkpoints_from, instance_id, written[keep]["seq"]
                    )
                await conn.execute(self._steps_sql.delete_of_instance, instance_id)
                params = convert.save_params(updated, [event], self._sql.channel)
                await conn.execute(self._sql.save_record, *params)
            return updated

        return await self._session.run("retry_from", body)
