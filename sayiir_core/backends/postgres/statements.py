"""SQL statements of ``PostgresBackend``, built once per schema.

Statements are built once per backend with the schema name spliced in (a validated,
quoted identifier; every value is a ``$n`` parameter). asyncpg prepares each distinct
statement text once per connection and reuses it, so a hot statement costs one round
trip. Their parameters and rows are converted in ``convert.py``."""

from __future__ import annotations

from sayiir_core.backends.base import (
    ControlRequest,
)
from sayiir_core.backends.postgres.schema import quote
from sayiir_core.backends.rows import (
    RECORD_COLUMNS,
)
from sayiir_core.status import Status

__all__ = ["FINISHED_SQL", "MUTABLE_COLUMNS", "RECORD_COLUMNS", "RECORD_WIDTH", "Statements"]

RECORD_WIDTH = len(RECORD_COLUMNS)
_COLUMNS = ", ".join(RECORD_COLUMNS)
MUTABLE_COLUMNS = [c for c in RECORD_COLUMNS if c not in ("instance_id", "input", "created_at")]
_TYPES = {
    "input": "bytea",
    "output": "bytea",
    "error": "json",
    "control": "json",
    "created_at": "float8",
    "updated_at": "float8",
    "wake_at": "float8",
    "lease_until": "float8",
    "claim_token": "int8",
    "priority": "int4",
}
_UNFINISHED = ", ".join(f"'{s.value}'" for s in Status if not s.is_terminal)
FINISHED_SQL = ", ".join(f"'{s.value}'" for s in Status if s.is_terminal)
# Statuses whose release means "runnable now": waking idle workers is worth a NOTIFY.
_RUNNABLE = f"'{Status.PENDING.value}', '{Status.RUNNING.value}'"


def _notified_id(instance_id: str) -> str:
    # A notification payload must stay under 8000 bytes; a longer id is sent as '' and
    # wakes every waiter, who each re-read their own instance.
    return f"CASE WHEN octet_length({instance_id}) < 8000 THEN {instance_id} ELSE '' END"


_NOTIFIED_ID = _notified_id("instance_id")


def _param(index: int, column: str) -> str:
    return f"${index}::{_TYPES.get(column, 'text')}"


# History events travel as one JSON array ($k, see ``events_json``) and are expanded in
# SQL, so any number of events costs no extra round trip. One JSON text is much cheaper
# for the driver to send than six parallel arrays (asyncpg encodes an array element by
# element). seq continues from history_seq, which the same statement bumped while
# holding the instance's row lock.
def _insert_events(table: str, k: int, source: str) -> str:
    return f"""
    INSERT INTO {table}.sayiir_history
        (instance_id, seq, kind, at, step_key, attempt, worker_id, detail)
    SELECT src.instance_id, src.history_seq - json_array_length(${k}::json) + e.n,
           e.kind, e.at, e.step_key, e.attempt, e.worker_id, e.detail::json
    FROM {source} AS src,
         ROWS FROM (json_to_recordset(${k}::json) AS (kind text, at float8, step_key text,
                    attempt int4, worker_id text, detail text))
             WITH ORDINALITY AS e(kind, at, step_key, attempt, worker_id, detail, n)
    """


class Statements:
    """Every statement ``PostgresBackend`` runs, for one schema."""

    def __init__(self, schema: str) -> None:
        t = quote(schema)
        self.channel = f"sayiir_work_{schema}"
        # Carries the id of each instance that finishes, for clients waiting on results.
        self.done_channel = f"sayiir_done_{schema}"
        self.notify_done = f"SELECT pg_notify($1::text, {_notified_id('$2::text')})"
        n_record = len(RECORD_COLUMNS)
        values = ", ".join(_param(i + 1, c) for i, c in enumerate(RECORD_COLUMNS))

        self.select_record = f"SELECT {_COLUMNS} FROM {t}.sayiir_instances WHERE instance_id = $1"
        self.select_token = f"SELECT claim_token FROM {t}.sayiir_instances WHERE instance_id = $1"
        self.lock_record = f"{self.select_record} FOR UPDATE"
        # The record and its checkpoints from one snapshot: one statement.
        self.load = f"""
            SELECT {", ".join(f"i.{c}" for c in RECORD_COLUMNS)}, cp.keys, cp.payloads
            FROM {t}.sayiir_instances AS i
            LEFT JOIN LATERAL (
                SELECT array_agg(step_key ORDER BY seq) AS keys,
                       array_agg(payload ORDER BY seq) AS payloads
                FROM {t}.sayiir_checkpoints WHERE instance_id = i.instance_id
            ) AS cp ON true
            WHERE i.instance_id = $1
        """

        # create: insert unless the id exists, with its events, waking workers if pending.
        # $n+1 is the history seq the instance had before (0, or the replaced one's).
        self.insert_record = f"""
            WITH ins AS (
                INSERT INTO {t}.sayiir_instances ({_COLUMNS}, history_seq)
                VALUES ({values}, ${n_record + 1}::int4 + json_array_length(${n_record + 2}::json))
                ON CONFLICT (instance_id) DO NOTHING
                RETURNING instance_id, status, history_seq
            ), events AS ({_insert_events(t, n_record + 2, "ins")})
            SELECT CASE WHEN status = '{Status.PENDING.value}'
                        THEN pg_notify(${n_record + 3}::text, '') END AS notified
            FROM ins
        """
        self.delete_instance = (
            f"DELETE FROM {t}.sayiir_instances WHERE instance_id = $1 RETURNING history_seq"
        )
        self.delete_checkpoints = f"DELETE FROM {t}.sayiir_checkpoints WHERE instance_id = $1"
        self.delete_signals = f"DELETE FROM {t}.sayiir_signals WHERE instance_id = $1"

        # Rewrites a record a transaction holds FOR UPDATE, appending its events.
        assignments = ", ".join(f"{c} = {_param(i + 2, c)}" for i, c in enumerate(MUTABLE_COLUMNS))
        k = len(MUTABLE_COLUMNS) + 2
        self.save_record = f"""
            WITH upd AS (
                UPDATE {t}.sayiir_instances
                SET {assignments}, history_seq = history_seq + json_array_length(${k}::json)
                WHERE instance_id = $1::text
                RETURNING instance_id, history_seq
            ), events AS ({_insert_events(t, k, "upd")})
            SELECT CASE WHEN ${k + 1}::bool THEN pg_notify(${k + 2}::text, '') END AS notified
            FROM upd
        """

        self.claim = f"""
            UPDATE {t}.sayiir_instances
            SET owner = $2, claim_token = claim_token + 1, lease_until = $3::float8
            WHERE instance_id = $1 RETURNING {_COLUMNS}, seq
        """
        # The queue: lock claimable rows in claim order, skipping rows another worker has
        # locked, and take them in the same statement. FOR UPDATE re-checks the WHERE
        # clause on the newest row version, so a row claimed since this statement's
        # snapshot is passed over, not claimed twice.
        self.claim_next = f"""
            WITH candidates AS (
                SELECT i.instance_id
                FROM {t}.sayiir_instances AS i
                JOIN unnest($1::text[], $2::text[]) AS d(workflow_id, definition_hash)
                  ON i.workflow_id = d.workflow_id AND i.definition_hash = d.definition_hash
                WHERE {_claimable("i", "$3::float8")}
                ORDER BY i.priority, COALESCE(i.wake_at, 0), i.created_at, i.seq
                LIMIT $4
                FOR UPDATE OF i SKIP LOCKED
            )
            UPDATE {t}.sayiir_instances AS i
            SET owner = $5, claim_token = i.claim_token + 1, lease_until = $6::float8
            FROM candidates AS c
            WHERE i.instance_id = c.instance_id
            RETURNING {", ".join(f"i.{c}" for c in RECORD_COLUMNS)}, i.seq
        """
        # Finds the claims of a claim_next whose reply was lost (owner + exact lease).
        self.claimed_by = f"""
            SELECT {_COLUMNS}, seq FROM {t}.sayiir_instances
            WHERE owner = $1 AND lease_until = $2::float8 AND status IN ({_UNFINISHED})
        """
        self.checkpoints_of = f"""
            SELECT instance_id, step_key, payload FROM {t}.sayiir_checkpoints
            WHERE instance_id = ANY($1::text[]) ORDER BY seq
        """
        self.renew = f"""
            UPDATE {t}.sayiir_instances SET lease_until = $3::float8
            WHERE instance_id = $1 AND claim_token = $2 AND owner IS NOT NULL
            RETURNING 1
        """

        # One step in one statement, so in one implicit transaction. The UPDATE is the
        # fence; every other part runs only if it matched (they read its RETURNING), and
        # SET expressions see the row as it was before the UPDATE, which is what
        # rules.settled_status needs. A duplicate checkpoint key aborts all of it.
        self.commit = f"""
            WITH upd AS (
                UPDATE {t}.sayiir_instances SET
                    status = CASE
                        WHEN $3::text = '{Status.PAUSED.value}'
                             AND control_request IS DISTINCT FROM '{ControlRequest.PAUSE.value}'
                        THEN '{Status.PENDING.value}' ELSE $3::text END,
                    control = $4::json, output = $5::bytea, error = $6::json,
                    wake_at = $7::float8, updated_at = $8::float8,
                    control_request = CASE WHEN $9::bool THEN NULL ELSE control_request END,
                    owner = CASE WHEN $10::bool THEN NULL ELSE owner END,
                    lease_until = CASE WHEN $11::bool THEN NULL ELSE lease_until END,
                    definition_hash = COALESCE($12::text, definition_hash),
                    priority = COALESCE($19::int4, priority),
                    history_seq = history_seq + json_array_length($15::json),
                    last_commit = $16::int8
                WHERE instance_id = $1::text AND claim_token = $2::int8 AND owner IS NOT NULL
                RETURNING instance_id, status, control_request, owner, history_seq
            ), checkpoints AS (
                -- $13 lists the keys with where each payload lies in $14 (their
                -- concatenation): see checkpoint_params.
                INSERT INTO {t}.sayiir_checkpoints (instance_id, step_key, payload)
                SELECT $1::text, c.step_key, substring($14::bytea FROM c.start + 1 FOR c.size)
                FROM ROWS FROM (json_to_recordset($13::json)
                                AS (step_key text, start int4, size int4))
                     WITH ORDINALITY AS c(step_key, start, size, n)
                WHERE EXISTS (SELECT 1 FROM upd)
                ORDER BY c.n
            ), events AS ({_insert_events(t, 15, "upd")}
            ), consumed AS (
                DELETE FROM {t}.sayiir_signals
                WHERE signal_id = $17::int8 AND instance_id = $1::text
                  AND EXISTS (SELECT 1 FROM upd)
            ), shared_steps AS (
                -- A checkpoint replaces its step's rows in the shared step queue; a
                -- finished instance needs none.
                DELETE FROM {t}.sayiir_steps
                WHERE instance_id = $1::text AND EXISTS (SELECT 1 FROM upd)
                  AND (step_key IN (SELECT k.step_key FROM json_to_recordset($13::json)
                                                          AS k(step_key text))
                       OR $3::text IN ({FINISHED_SQL}))
            )
            SELECT control_request,
                   CASE WHEN owner IS NULL AND status IN ({_RUNNABLE})
                        THEN pg_notify($18::text, '') END AS notified,
                   CASE WHEN status IN ({FINISHED_SQL})
                        THEN pg_notify($20::text, {_NOTIFIED_ID}) END AS finished
            FROM upd
        """
        self.commit_outcome = f"""
            SELECT claim_token, owner, last_commit, control_request
            FROM {t}.sayiir_instances WHERE instance_id = $1
        """
        self.existing_keys = f"""
            SELECT step_key FROM {t}.sayiir_checkpoints
            WHERE instance_id = $1 AND step_key = ANY($2::text[]) ORDER BY seq LIMIT 1
        """

        # Only a signal the instance is parked waiting for wakes it (control["signals"]
        # maps each awaited step to its signal name); any other is buffered for later.
        # $7 is the most unconsumed signals an instance may buffer: at it, nothing is
        # written and no row comes back, unless the instance is parked waiting for this
        # very signal (rules.check_signal_room). The count is the statement's snapshot's, so
        # the row is updated only if it is still the version that snapshot saw (equal
        # xmin; a sender or a consume committed meanwhile changed it): else nothing is
        # written and the caller retries with the row locked first (control.py).
        awaited = (
            f"status = '{Status.AWAITING_SIGNAL.value}' AND EXISTS ("
            "SELECT 1 FROM json_each_text(control->'signals') AS awaited "
            "WHERE awaited.value = $2)"
        )
        self.send_signal = f"""
            WITH upd AS (
                UPDATE {t}.sayiir_instances
                SET wake_at = CASE WHEN {awaited} THEN $4::float8 ELSE wake_at END,
                    history_seq = history_seq + 1
                WHERE instance_id = $1 AND status NOT IN ({FINISHED_SQL})
                    AND ((SELECT count(*) FROM {t}.sayiir_signals WHERE instance_id = $1)
                        < $7::int8 OR {awaited})
                    AND xmin = (SELECT xmin FROM {t}.sayiir_instances WHERE instance_id = $1)
                RETURNING instance_id, history_seq, {awaited} AS wakes
            ), signal AS (
                INSERT INTO {t}.sayiir_signals (instance_id, name, payload, sent_at)
                SELECT $1, $2, $3::bytea, $4::float8 FROM upd
            ), event AS (
                INSERT INTO {t}.sayiir_history (instance_id, seq, kind, at, detail)
                SELECT $1, history_seq, 'signal_sent', $4::float8, $5::json FROM upd
            )
            SELECT CASE WHEN wakes THEN pg_notify($6::text, '') END AS notified
            FROM upd
        """
        self.next_signal = f"""
            SELECT signal_id, name, payload FROM {t}.sayiir_signals
            WHERE instance_id = $1 AND name = $2 ORDER BY signal_id LIMIT 1
        """

        self.select_checkpoint = (
            f"SELECT payload FROM {t}.sayiir_checkpoints WHERE instance_id = $1 AND step_key = $2"
        )
        self.checkpoint_seqs = (
            f"SELECT seq, step_key FROM {t}.sayiir_checkpoints WHERE instance_id = $1 ORDER BY seq"
        )
        self.delete_checkpoints_from = (
            f"DELETE FROM {t}.sayiir_checkpoints WHERE instance_id = $1 AND seq >= $2"
        )
        self.select_events = f"""
            SELECT kind, at, step_key, attempt, worker_id, detail, seq
            FROM {t}.sayiir_history WHERE instance_id = $1 ORDER BY seq
        """
        self.instance_exists = f"SELECT 1 FROM {t}.sayiir_instances WHERE instance_id = $1"
        # list_instances: one of eight fixed shapes, so each is a reusable prepared
        # statement with a plan for its own filters (no "$1 IS NULL OR ..." guesswork).
        self._list_table = t

    def list_query(self, *, by_status: bool, by_workflow: bool, after: bool) -> str:
        """Newest first; parameters in order: status, workflow_id, after, limit (if used)."""
        where: list[str] = []
        position = 0
        for column, wanted in (("status", by_status), ("workflow_id", by_workflow)):
            if wanted:
                position += 1
                where.append(f"{column} = ${position}")
        if after:
            position += 1
            where.append(f"seq < ${position}::int8")
        condition = f"WHERE {' AND '.join(where)} " if where else ""
        return (
            f"SELECT seq, {_COLUMNS} FROM {self._list_table}.sayiir_instances {condition}"
            f"ORDER BY seq DESC LIMIT ${position + 1}"
        )


def _claimable(alias: str, now: str) -> str:
    """``rules.is_claimable`` as SQL (the contract suite holds the two together).

    The last condition is written to match the predicate of the partial index
    ``sayiir_instances_claimable`` arm by arm, so the planner can prove that the index
    holds every row this can select and walk it in claim order.
    """
    a = alias
    return f"""
        {a}.status IN ({_UNFINISHED})
        AND ({a}.owner IS NULL OR COALESCE({a}.lease_until, 0) <= {now})
        AND ({a}.control_request IS NOT NULL
             OR {a}.status IN ({_RUNNABLE})
             OR ({a}.status IN ('{Status.WAITING.value}', '{Status.AWAITING_SIGNAL.value}')
                 AND {a}.wake_at IS NOT NULL AND {a}.wake_at <= {now}))
    """
