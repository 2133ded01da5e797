"""The shared step queue on PostgreSQL: ``PostgresStepQueue``, owned by ``PostgresBackend``.

The backend holds one and offers the ``StepQueue`` methods by delegating to it; the
queue shares the backend's ``Session`` (pool, retries) and has a LISTEN connection of
its own. Every operation is one statement. Publishing wakes idle workers on the work
channel; finishing a step wakes orchestrators on the steps channel (its own channel,
so workers are not woken for every finished step).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sayiir_core.backends._rows import to_json
from sayiir_core.backends.postgres.listen import WorkListener
from sayiir_core.backends.postgres.schema import quote
from sayiir_core.backends.postgres.session import Attempt, Done, Session
from sayiir_core.backends.postgres.statements import FINISHED_SQL, check_size
from sayiir_core.backends.step_queue import ClaimedStep, StepRef, StepResult, StepTicket
from sayiir_core.machine.state import ErrorInfo

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Conn

_TICKET_COLUMNS = (
    "instance_id, step_key, attempt, workflow_id, definition_hash, input, priority, queued_at"
)
_REF_MATCH = "instance_id = $1 AND step_key = $2 AND attempt = $3::int4"
_RETURNED = ", ".join(f"s.{c.strip()}" for c in _TICKET_COLUMNS.split(","))


class StepStatements:
    """The step queue's statements for one schema."""

    def __init__(self, schema: str, work_channel: str) -> None:
        t = quote(schema)
        self.channel = f"sayiir_steps_{schema}"
        self.publish = f"""
            WITH ins AS (
                INSERT INTO {t}.sayiir_steps ({_TICKET_COLUMNS})
                SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[],
                                     $5::text[], $6::bytea[], $7::int4[], $8::float8[])
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT pg_notify('{work_channel}', '') WHERE EXISTS (SELECT 1 FROM ins)
        """
        # Like claim_next: lock claimable rows in claim order, skipping locked ones.
        self.claim = f"""
            WITH candidates AS (
                SELECT s.instance_id, s.step_key, s.attempt
                FROM {t}.sayiir_steps AS s
                JOIN unnest($1::text[], $2::text[]) AS d(workflow_id, definition_hash)
                  ON s.workflow_id = d.workflow_id AND s.definition_hash = d.definition_hash
                WHERE s.finished_at IS NULL
                  AND (s.owner IS NULL OR s.lease_until <= $3::float8)
                  AND ($7::text[] IS NULL OR s.instance_id = ANY($7::text[]))
                  AND EXISTS (SELECT 1 FROM {t}.sayiir_instances AS i
                              WHERE i.instance_id = s.instance_id
                                AND i.status NOT IN ({FINISHED_SQL}))
                ORDER BY s.priority, s.queued_at
                LIMIT $4
                FOR UPDATE OF s SKIP LOCKED
            )
            UPDATE {t}.sayiir_steps AS s
            SET owner = $5, claim_token = nextval('{t}.sayiir_step_tokens'),
                lease_until = $6::float8
            FROM candidates AS c
            WHERE s.instance_id = c.instance_id AND s.step_key = c.step_key
              AND s.attempt = c.attempt
            RETURNING {_RETURNED}, s.claim_token
        """
        # One named step: a plain UPDATE of its row. A concurrent claim of the same row
        # waits for the first to commit, then re-checks the WHERE on the row as it is
        # now (READ COMMITTED), finds it held and matches nothing: one caller wins.
        self.claim_one = f"""
            UPDATE {t}.sayiir_steps AS s
            SET owner = $4, claim_token = nextval('{t}.sayiir_step_tokens'),
                lease_until = $6::float8
            WHERE s.instance_id = $1 AND s.step_key = $2 AND s.attempt = $3::int4
              AND s.finished_at IS NULL
              AND (s.owner IS NULL OR s.lease_until <= $5::float8)
              AND EXISTS (SELECT 1 FROM {t}.sayiir_instances AS i
                          WHERE i.instance_id = s.instance_id
                            AND i.status NOT IN ({FINISHED_SQL}))
            RETURNING {_RETURNED}, s.claim_token
        """
        # Finds the claim of a claim_step whose reply was lost (owner + exact lease).
        self.claimed_one = f"""
            SELECT {_TICKET_COLUMNS}, claim_token FROM {t}.sayiir_steps
            WHERE {_REF_MATCH} AND owner = $4 AND lease_until = $5::float8
              AND finished_at IS NULL
        """
        # Finds the claims of a claim_steps whose reply was lost (owner + exact lease).
        self.claimed_by = f"""
            SELECT {_TICKET_COLUMNS}, claim_token FROM {t}.sayiir_steps
            WHERE owner = $1 AND lease_until = $2::float8 AND finished_at IS NULL
        """
        self.renew = f"""
            UPDATE {t}.sayiir_steps SET lease_until = $5::float8
            WHERE {_REF_MATCH} AND claim_token = $4 AND finished_at IS NULL
            RETURNING 1
        """
        self.finish = f"""
            WITH upd AS (
                UPDATE {t}.sayiir_steps
                SET owner = NULL, lease_until = NULL, worker_id = $5, started_at = $6::float8,
                    finished_at = $7::float8, output = $8::bytea, error = $9::json
                WHERE {_REF_MATCH} AND claim_token = $4
                RETURNING 1
            )
            SELECT pg_notify('{self.channel}', '') FROM upd
        """
        self.results = f"""
            SELECT s.instance_id, s.step_key, s.attempt, s.worker_id, s.started_at,
                   s.finished_at, s.output, s.error
            FROM {t}.sayiir_steps AS s
            JOIN unnest($1::text[], $2::text[], $3::int4[]) AS r(instance_id, step_key, attempt)
              ON s.instance_id = r.instance_id AND s.step_key = r.step_key
             AND s.attempt = r.attempt
            WHERE s.finished_at IS NOT NULL
        """
        self.delete_of_instance = f"DELETE FROM {t}.sayiir_steps WHERE instance_id = $1"


class PostgresStepQueue:
    """The ``StepQueue`` methods on ``session``, for the tables of ``schema``.

    ``statements`` are public to the owning backend: its cancel and ``reset_from``
    withdraw an instance's steps inside their own transactions.
    """

    def __init__(self, session: Session, schema: str, work_channel: str, max_payload: int) -> None:
        self._session = session
        self._max_payload = max_payload
        self.statements = StepStatements(schema, work_channel)
        self._step_listener = WorkListener(session.connect, self.statements.channel)
        session.on_fork(self._step_listener.drop_inherited)

    async def close(self) -> None:
        """Close the LISTEN connection for finished steps (the pool is the backend's)."""
        await self._step_listener.close()

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        if not tickets:
            return
        for ticket in tickets:
            ref = ticket.ref
            check_size(ticket.input, self._max_payload, f"the input of step {ref.step_key!r}")
        columns = _ticket_columns(tickets)

        async def body(conn: Conn, attempt: Attempt) -> None:
            await attempt.write(conn, self.statements.publish, *columns)

        # Inserting the same tickets again inserts nothing.
        await self._session.run("publish_steps", body, idempotent=True)

    async def claim_steps(
        self,
        owner: str,
        workflows: Mapping[str, str],
        ttl: float,
        now: float,
        limit: int,
        *,
        instances: Collection[str] | None = None,
    ) -> list[ClaimedStep]:
        if limit < 1 or not workflows:
            return []
        lease_until = now + ttl
        ids, hashes = list(workflows), list(workflows.values())
        only = list(instances) if instances is not None else None
        params = [ids, hashes, now, limit, owner, lease_until, only]

        async def body(conn: Conn, attempt: Attempt) -> list[ClaimedStep]:
            return _claimed(await attempt.write(conn, self.statements.claim, *params))

        async def resolve(conn: Conn) -> Done[list[ClaimedStep]] | None:
            rows = await conn.fetch(self.statements.claimed_by, owner, lease_until)
            found = [
                row
                for row in rows
                if workflows.get(row[3]) == row[4] and (only is None or row[0] in only)
            ]
            return Done(_claimed(found)) if found else None

        return await self._session.run("claim_steps", body, resolve=resolve)

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        lease_until = now + ttl
        key = (ref.instance_id, ref.step_key, ref.attempt)

        async def body(conn: Conn, attempt: Attempt) -> ClaimedStep | None:
            params = (*key, owner, now, lease_until)
            claimed = _claimed(await attempt.write(conn, self.statements.claim_one, *params))
            return claimed[0] if claimed else None

        async def resolve(conn: Conn) -> Done[ClaimedStep | None] | None:
            rows = await conn.fetch(self.statements.claimed_one, *key, owner, lease_until)
            return Done(_claimed(rows)[0]) if rows else None

        return await self._session.run("claim_step", body, resolve=resolve)

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        async def body(conn: Conn, attempt: Attempt) -> bool:
            key = (ref.instance_id, ref.step_key, ref.attempt)
            return bool(await attempt.write(conn, self.statements.renew, *key, token, now + ttl))

        return await self._session.run("renew_step", body, idempotent=True)

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        if result.output is not None:
            what = f"the output of step {ref.step_key!r}"
            check_size(result.output, self._max_payload, what)
        params = [
            ref.instance_id,
            ref.step_key,
            ref.attempt,
            token,
            result.worker_id,
            result.started_at,
            result.finished_at,
            result.output,
            _failure_json(result),
        ]

        async def body(conn: Conn, attempt: Attempt) -> bool:
            return bool(await attempt.write(conn, self.statements.finish, *params))

        # Writing the same outcome under the same token twice is writing it once.
        return await self._session.run("finish_step", body, idempotent=True)

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        if not refs:
            return {}
        columns = [
            [r.instance_id for r in refs],
            [r.step_key for r in refs],
            [r.attempt for r in refs],
        ]

        async def body(conn: Conn, _: Attempt) -> list[Any]:
            return list(await conn.fetch(self.statements.results, *columns))

        rows = await self._session.run("step_results", body, idempotent=True)
        return {StepRef(row[0], row[1], row[2]): _result_from(row) for row in rows}

    async def wait_for_step_results(self, max_wait: float) -> None:
        self._session.pool()
        await self._step_listener.wait(max_wait)


def _ticket_columns(tickets: Sequence[StepTicket]) -> list[list[Any]]:
    return [
        [t.ref.instance_id for t in tickets],
        [t.ref.step_key for t in tickets],
        [t.ref.attempt for t in tickets],
        [t.workflow_id for t in tickets],
        [t.definition_hash for t in tickets],
        [t.input for t in tickets],
        [t.priority for t in tickets],
        [t.now for t in tickets],
    ]


def _claimed(rows: Sequence[Any]) -> list[ClaimedStep]:
    claimed = [
        ClaimedStep(
            StepTicket(StepRef(row[0], row[1], row[2]), row[3], row[4], row[5], row[6], row[7]),
            row[8],
        )
        for row in rows
    ]
    # RETURNING gives no order: sort like the claim query does.
    return sorted(claimed, key=lambda c: (c.ticket.priority, c.ticket.now))


def _failure_json(result: StepResult) -> str | None:
    if result.error is None:
        return None
    failure = {
        "error": result.error.to_dict(),
        "retryable": result.retryable,
        "traceback": result.traceback,
    }
    return to_json(failure, "step error")


def _result_from(row: Any) -> StepResult:
    worker_id, started_at, finished_at, output, error = row[3:8]
    if error is None:
        return StepResult(worker_id, started_at, finished_at, output=output)
    failure = json.loads(error)
    return StepResult(
        worker_id,
        started_at,
        finished_at,
        error=ErrorInfo.from_dict(failure["error"]),
        retryable=failure["retryable"],
        traceback=failure["traceback"],
    )
