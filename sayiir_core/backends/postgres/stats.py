"""``BackendStats`` on PostgreSQL (see ``backends/stats.py``): one statement each.

``count_by_status`` can be answered from the ``(status, seq)`` index alone. The ready
backlog states ``claim_next``'s condition (``statements._claimable``), which the
partial index ``sayiir_instances_claimable`` is built to hold, plus ``claim_steps``'
condition on the unfinished steps (the partial index ``sayiir_steps_claimable``): rows
of finished instances, history and payloads are never read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sayiir_core.backends.postgres.schema import quote

# The claim statements' own conditions, so the backlog is exactly what a claim could take.
from sayiir_core.backends.postgres.statements import FINISHED_SQL, _claimable
from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.status import Status

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Attempt, Conn, Session


class StatsStatements:
    """The two statements for one schema."""

    def __init__(self, schema: str) -> None:
        t = quote(schema)
        self.count_by_status = (
            f"SELECT status, count(*) AS n FROM {t}.sayiir_instances GROUP BY status"
        )
        # stats.ready_since as SQL; GREATEST skips the NULLs of the CASEs that do not apply.
        self.ready_backlog = f"""
            WITH ready AS (
                SELECT GREATEST(
                    i.updated_at,
                    CASE WHEN i.wake_at <= $1::float8 THEN i.wake_at END,
                    CASE WHEN i.lease_until <= $1::float8 THEN i.lease_until END
                ) AS since
                FROM {t}.sayiir_instances AS i
                WHERE {_claimable("i", "$1::float8")}
                UNION ALL
                SELECT GREATEST(
                    s.queued_at, CASE WHEN s.lease_until <= $1::float8 THEN s.lease_until END
                )
                FROM {t}.sayiir_steps AS s
                WHERE s.finished_at IS NULL
                  AND (s.owner IS NULL OR s.lease_until <= $1::float8)
                  AND EXISTS (SELECT 1 FROM {t}.sayiir_instances AS i
                              WHERE i.instance_id = s.instance_id
                                AND i.status NOT IN ({FINISHED_SQL}))
            )
            SELECT count(*) AS n, min(since) AS oldest FROM ready
        """


async def count_by_status(session: Session, statements: StatsStatements) -> dict[Status, int]:
    async def body(conn: Conn, _: Attempt) -> dict[Status, int]:
        rows = await conn.fetch(statements.count_by_status)
        return {Status(row["status"]): row["n"] for row in rows}

    return await session.run("count_by_status", body, idempotent=True)


async def ready_backlog(session: Session, statements: StatsStatements, now: float) -> ReadyBacklog:
    async def body(conn: Conn, _: Attempt) -> ReadyBacklog:
        row = await conn.fetchrow(statements.ready_backlog, now)
        assert row is not None  # an aggregate always returns its one row
        return ReadyBacklog.of(row["n"], row["oldest"], now)

    return await session.run("ready_backlog", body, idempotent=True)
