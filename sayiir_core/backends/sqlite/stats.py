"""``BackendStats`` on SQLite (see ``backends/stats.py``): one statement each.

``COUNT_BY_STATUS`` walks the ``(status, workflow_id)`` index, never the table; the
ready backlog is ``claimable_query``'s condition (``statements._CLAIMABLE``), whose
``status IN`` of the unfinished statuses also goes through that index, so finished
instances, however many, are not read. SQLite has no step queue: only instances count.
"""

from __future__ import annotations

import sqlite3

# The claim loop's own condition, so the backlog is exactly what claim_next could take.
from sayiir_core.backends.sqlite.statements import _CLAIMABLE
from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.status import Status

COUNT_BY_STATUS = "SELECT status, COUNT(*) FROM sayiir_instances GROUP BY status"

# stats.ready_since as SQL: the latest of the last write, a due wake-up and the end of
# an expired lease. SQLite's multi-argument MAX is NULL if any argument is, hence the 0s.
READY_BACKLOG = f"""
SELECT COUNT(*), MIN(MAX(
    updated_at,
    CASE WHEN wake_at <= :now THEN wake_at ELSE 0 END,
    CASE WHEN lease_until <= :now THEN lease_until ELSE 0 END
))
FROM sayiir_instances WHERE {_CLAIMABLE}
"""


def count_by_status(conn: sqlite3.Connection) -> dict[Status, int]:
    return {Status(status): count for status, count in conn.execute(COUNT_BY_STATUS)}


def ready_backlog(conn: sqlite3.Connection, now: float) -> ReadyBacklog:
    count, oldest = conn.execute(READY_BACKLOG, {"now": now}).fetchone()
    return ReadyBacklog.of(count, oldest, now)
