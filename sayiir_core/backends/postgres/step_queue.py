"""The shared step queue on PostgreSQL: ``PostgresStepQueue``, owned by ``PostgresBackend``.

The backend holds one and offers the ``StepQueue`` methods by delegating to it; the
queue shares the backend's ``Session`` (pool, retries) and has a LISTEN connection of
its own. Every operation is one statement. Publishing wakes idle workers on the work
channel; finishing a step wakes orchestrators on the steps channel (its own channel,
so workers are not woken for every finished step).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sayiir_core.backends.base import Claim, LoadedInstance
from sayiir_core.backends.postgres import statements as sql
from sayiir_core.backends.postgres.listen import WorkListener
from sayiir_core.backends.postgres.schema import quote
from sayiir_core.backends.postgres.session import Attempt, Done, Session
from sayiir_core.backends.postgres.statements import FINISHED_SQL, check_size
from sayiir_core.backends.rows import failure_json, step_result, to_json
from sayiir_core.backends.step_queue import ClaimedStep, StepRef, StepResult, StepTicket
from sayiir_core.status import Status

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


class AdvanceStatements:
    """``claim_if_free`` and ``commit_and_publish`` (``AdvanceQueue``) for one schema."""

    def __init__(self, main: sql.Statements, schema: str, work_channel: str) -> None:
        t = quote(schema)
        returned = ", ".join(f"i.{c}" for c in sql.RECORD_COLUMNS)
        # The checkpoints come from the statement's snapshot, the claimed row from its
        # newest version (FOR UPDATE waits for a write in progress, then re-checks the
        # row as that write left it). Equal xmin says the snapshot already saw that
        # version (every write of checkpoints writes the instance row in the same
        # transaction); else the caller reads the checkpoints again.
        self.claim_if_free = f"""
            WITH free AS (
                SELECT i.instance_id, i.xmin::text AS version
                FROM {t}.sayiir_instances AS i
                WHERE i.instance_id = $1 AND i.status NOT IN ({sql.FINISHED_SQL})
                  AND (i.owner IS NULL OR COALESCE(i.lease_until, 0) <= $2::float8)
                  AND (i.status <> '{Status.PAUSED.value}' OR i.control_request IS NOT NULL)
                  AND i.definition_hash = ($5::json ->> i.workflow_id)
                FOR UPDATE OF i
            ), upd AS (
                UPDATE {t}.sayiir_instances AS i
                SET owner = $3, claim_token = i.claim_token + 1, lease_until = $4::float8
                FROM free WHERE i.instance_id = free.instance_id
                RETURNING {returned}, i.seq, free.version
            )
            SELECT upd.*,
                   (SELECT xmin::text FROM {t}.sayiir_instances WHERE instance_id = $1)
                       AS seen_version,
                   cp.keys, cp.payloads
            FROM upd
            LEFT JOIN LATERAL (
                SELECT array_agg(step_key ORDER BY seq) AS keys,
                       array_agg(payload ORDER BY seq) AS payloads
                FROM {t}.sayiir_checkpoints WHERE instance_id = $1
            ) AS cp ON true
        """
        # Finds the claim of a claim_if_free whose reply was lost (owner + exact lease).
        self.claimed_if_free = f"""
            SELECT {", ".join(sql.RECORD_COLUMNS)}, seq FROM {t}.sayiir_instances
            WHERE instance_id = $1 AND owner = $2 AND lease_until = $3::float8
              AND status NOT IN ({sql.FINISHED_SQL})
        """
        self.checkpoints_of = main.checkpoints_of
        self.commit_and_publish = _with_publish(main.commit, t, work_channel)


def _with_publish(commit: str, t: str, work_channel: str) -> str:
    """The commit statement with one more part: queue the tickets if the fence holds.

    The tickets' eight columns are the parameters after the commit's own. Queued
    tickets wake idle workers (``publish_steps`` does the same), even when the commit
    itself leaves nothing runnable.
    """
    ends = list(re.finditer(r"\)\s*SELECT\s+control_request\b", commit))
    if len(ends) != 1:
        raise RuntimeError("internal error: the commit statement changed shape")
    n = max(int(number) for number in re.findall(r"\$(\d+)", commit))
    types = ("text", "text", "int4", "text", "text", "bytea", "int4", "float8")
    columns = ", ".join(f"${n + i}::{kind}[]" for i, kind in enumerate(types, start=1))
    published = f"""
            , published AS (
                INSERT INTO {t}.sayiir_steps ({_TICKET_COLUMNS})
                SELECT * FROM unnest({columns})
                WHERE EXISTS (SELECT 1 FROM upd)
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
    """
    woken = (
        f" (SELECT pg_notify('{work_channel}', '') WHERE EXISTS (SELECT 1 FROM published))"
        " AS queued,"
    )
    at = ends[0].start() + 1
    select_at = ends[0].end() - len("control_request")
    return commit[:at] + published + commit[at:select_at] + woken + commit[select_at:]


class PostgresStepQueue:
    """The ``StepQueue`` methods on ``session``, for the tables of ``schema``.

    ``statements`` are public to the owning backend: its cancel and ``reset_from``
    withdraw an instance's steps inside their own transactions.
    """

    def __init__(self, session: Session, schema: str, work_channel: str, max_payload: int) -> None:
        self._session = session
        self._max_payload = max_payload
        self.statements = StepStatements(schema, work_channel)
        self._main = sql.Statements(schema)
        self._advance = AdvanceStatements(self._main, schema, work_channel)
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
        columns = ticket_columns(tickets)

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
            failure_json(result),
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

    # -- AdvanceQueue: an advance of a dispatched instance in two round trips ----------

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        lease_until = now + ttl
        wanted = to_json(dict(definitions), "workflow definitions")
        params = (instance_id, now, owner, lease_until, wanted)
        statements = self._advance

        async def body(conn: Conn, attempt: Attempt) -> Claim | None:
            rows = await attempt.write(conn, statements.claim_if_free, *params)
            if not rows:
                return None
            row = rows[0]
            if row["version"] == row["seen_version"]:
                checkpoints = sql.checkpoints_from(row["keys"], row["payloads"])
                record = sql.record_from_row(tuple(row)[: sql.RECORD_WIDTH])
                return Claim(LoadedInstance(record, checkpoints), record.claim_token)
            # Claimed a version newer than the statement's snapshot: read it again.
            return await self._claim_read(conn, [row])

        async def resolve(conn: Conn) -> Done[Claim | None] | None:
            rows = await conn.fetch(statements.claimed_if_free, instance_id, owner, lease_until)
            return Done(await self._claim_read(conn, rows)) if rows else None

        return await self._session.run("claim_if_free", body, resolve=resolve)

    async def _claim_read(self, conn: Conn, rows: Sequence[Any]) -> Claim:
        checkpoint_rows = await conn.fetch(self._advance.checkpoints_of, [rows[0]["instance_id"]])
        (claim,) = sql.claims_from(rows, checkpoint_rows)
        return claim

    @property
    def commit_and_publish_statement(self) -> str:
        """The commit statement that also queues tickets (``PostgresBackend`` sends it)."""
        return self._advance.commit_and_publish


def ticket_columns(tickets: Sequence[StepTicket]) -> list[list[Any]]:
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


def _result_from(row: Any) -> StepResult:
    worker_id, started_at, finished_at, output, failure = row[3:8]
    return step_result(worker_id, started_at, finished_at, output, failure)
