"""The SQL of the shared step queue on PostgreSQL, for one schema.

``StepStatements``: the ``StepQueue`` operations, one statement each.
``AdvanceStatements``: ``AdvanceQueue``'s two writes and ``StepAndInstanceClaim``'s
claim. ``PostgresStepQueue`` (``step_queue.py``) sends them.
"""

from __future__ import annotations

import re

from sayiir_core.backends.postgres import statements as sql
from sayiir_core.backends.postgres.schema import quote
from sayiir_core.backends.postgres.statements import FINISHED_SQL
from sayiir_core.status import Status

TICKET_COLUMNS = (
    "instance_id, step_key, attempt, workflow_id, definition_hash, input, priority, queued_at"
)
_REF_MATCH = "instance_id = $1 AND step_key = $2 AND attempt = $3::int4"
_RETURNED = ", ".join(f"s.{c.strip()}" for c in TICKET_COLUMNS.split(","))
# A claimed step's columns, its token and whether it was taken over.
STEP_WIDTH = len(TICKET_COLUMNS.split(",")) + 2
# Claimable rows are queued (no owner) or hold an expired lease: an owner still there
# before the claim says the claim takes the step over. Read under the row lock, so it
# is the row as the claim found it, also after waiting for a concurrent claim.
_TAKEN_OVER = "s.owner IS NOT NULL AS taken_over"
_SAME_ROW = """s.instance_id = c.instance_id AND s.step_key = c.step_key
              AND s.attempt = c.attempt"""


class StepStatements:
    """The step queue's statements for one schema."""

    def __init__(self, schema: str, work_channel: str) -> None:
        t = quote(schema)
        self.channel = f"sayiir_steps_{schema}"
        self.publish = f"""
            WITH ins AS (
                INSERT INTO {t}.sayiir_steps ({TICKET_COLUMNS})
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
                SELECT s.instance_id, s.step_key, s.attempt, {_TAKEN_OVER}
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
            WHERE {_SAME_ROW}
            RETURNING {_RETURNED}, s.claim_token, c.taken_over
        """
        # One named step: lock its row if claimable, then update it. A concurrent claim
        # of the same row waits for the first to commit, then re-checks the WHERE on the
        # row as it is now (READ COMMITTED), finds it held and matches nothing: one
        # caller wins.
        self.claim_one = f"""
            WITH c AS ({_claimable_one(t)})
            UPDATE {t}.sayiir_steps AS s
            SET owner = $4, claim_token = nextval('{t}.sayiir_step_tokens'),
                lease_until = $6::float8
            FROM c WHERE {_SAME_ROW}
            RETURNING {_RETURNED}, s.claim_token, c.taken_over
        """
        # Finds the claim of a claim_step whose reply was lost (owner + exact lease);
        # whether it was a takeover is not known any more.
        self.claimed_one = f"""
            SELECT {TICKET_COLUMNS}, claim_token, false FROM {t}.sayiir_steps
            WHERE {_REF_MATCH} AND owner = $4 AND lease_until = $5::float8
              AND finished_at IS NULL
        """
        # Finds the claims of a claim_steps whose reply was lost (owner + exact lease).
        self.claimed_by = f"""
            SELECT {TICKET_COLUMNS}, claim_token, false FROM {t}.sayiir_steps
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
        self.commit_and_claim_next = _with_next_claimed(self.commit_and_publish, t)
        # Resolving a lost reply of commit_and_claim_next: the instance as it is now
        # (whether the commit was applied, and held by the owner under the exact lease
        # that call asked for if it handed the instance over).
        self.chain_outcome = f"""
            SELECT claim_token, owner, last_commit, control_request, lease_until
            FROM {t}.sayiir_instances WHERE instance_id = $1
        """
        # Lets go of an instance that commit_and_claim_next kept although a concurrent
        # publish of the same step (a claim taken over meanwhile) got its row first.
        self.let_go = f"""
            UPDATE {t}.sayiir_instances SET owner = NULL, lease_until = NULL
            WHERE instance_id = $1 AND claim_token = $2 AND owner = $3
        """
        # claim_one, then claim_if_free's claim when the instance has nothing asked of it
        # and no other step out. SKIP LOCKED: a write in progress on the instance (or a
        # commit deleting step rows, which locks the instance row first) is not waited
        # for; the step is claimed alone. The step's columns come first, then the
        # instance's as in claim_if_free (all NULL when it was not claimed).
        self.claim_step_and_instance = f"""
            WITH c AS ({_claimable_one(t)}
            ), step AS (
                UPDATE {t}.sayiir_steps AS s
                SET owner = $4, claim_token = nextval('{t}.sayiir_step_tokens'),
                    lease_until = $6::float8
                FROM c WHERE {_SAME_ROW}
                RETURNING {_RETURNED}, s.claim_token, c.taken_over
            ), free AS (
                SELECT i.instance_id, i.xmin::text AS version
                FROM {t}.sayiir_instances AS i
                WHERE i.instance_id = $1 AND EXISTS (SELECT 1 FROM step)
                  AND i.status NOT IN ({sql.FINISHED_SQL})
                  AND i.status <> '{Status.PAUSED.value}' AND i.control_request IS NULL
                  AND (i.owner IS NULL OR COALESCE(i.lease_until, 0) <= $5::float8)
                  AND i.definition_hash = ($7::json ->> i.workflow_id)
                  AND NOT EXISTS (SELECT 1 FROM {t}.sayiir_steps AS o
                                  WHERE o.instance_id = $1 AND o.finished_at IS NULL
                                    AND (o.step_key <> $2 OR o.attempt <> $3::int4))
                FOR UPDATE OF i SKIP LOCKED
            ), upd AS (
                UPDATE {t}.sayiir_instances AS i
                SET owner = $4, claim_token = i.claim_token + 1, lease_until = $8::float8
                FROM free WHERE i.instance_id = free.instance_id
                RETURNING {returned}, i.seq, free.version
            )
            SELECT step.*, upd.*,
                   (SELECT xmin::text FROM {t}.sayiir_instances WHERE instance_id = $1)
                       AS seen_version,
                   cp.keys, cp.payloads
            FROM step
            LEFT JOIN upd ON true
            LEFT JOIN LATERAL (
                SELECT array_agg(step_key ORDER BY seq) AS keys,
                       array_agg(payload ORDER BY seq) AS payloads
                FROM {t}.sayiir_checkpoints WHERE instance_id = upd.instance_id
            ) AS cp ON true
        """


def _claimable_one(t: str) -> str:
    """Locks the row of step ``($1, $2, $3)`` if it is claimable at ``$5``."""
    return f"""
                SELECT s.instance_id, s.step_key, s.attempt, {_TAKEN_OVER}
                FROM {t}.sayiir_steps AS s
                WHERE s.instance_id = $1 AND s.step_key = $2 AND s.attempt = $3::int4
                  AND s.finished_at IS NULL
                  AND (s.owner IS NULL OR s.lease_until <= $5::float8)
                  AND EXISTS (SELECT 1 FROM {t}.sayiir_instances AS i
                              WHERE i.instance_id = s.instance_id
                                AND i.status NOT IN ({FINISHED_SQL}))
                FOR UPDATE OF s"""


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
                INSERT INTO {t}.sayiir_steps ({TICKET_COLUMNS})
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


def _with_next_claimed(commit_and_publish: str, t: str) -> str:
    """``commit_and_publish`` that also hands the one queued step and the instance to
    an owner (``CommitAndClaimNext``).

    Three parameters follow the tickets' eight: the owner (NULL: hand nothing over),
    the step's lease and the instance's lease. Whether to hand over is decided in the
    instance's UPDATE, on the row as the commit locked it (a control request committed
    meanwhile is seen); the other steps and whether the ticket's row exists are judged
    from the statement's snapshot (the step rows the write checkpoints are deleted by
    it). The ticket is then inserted already claimed; if a concurrent insert of the
    same ref won, no token comes back and the caller lets go of the instance.
    """
    n = max(int(number) for number in re.findall(r"\$(\d+)", commit_and_publish))
    owner, step_until, claim_until = f"${n + 1}::text", f"${n + 2}::float8", f"${n + 3}::float8"
    keys, attempts = f"${n - 6}::text[]", f"${n - 5}::int4[]"
    # Judged from the statement's snapshot, once: the ticket's ref has no row, and no
    # other step has one but those the write checkpoints (it deletes them). A finished
    # step's row counts too: its outcome waits for an advance, which a hand-over would
    # put off until the handed-over step's own advance.
    alone = f"""WITH alone AS (
                SELECT NOT EXISTS (
                    SELECT 1 FROM {t}.sayiir_steps AS o
                    WHERE o.instance_id = $1::text
                      AND ((o.step_key = ({keys})[1] AND o.attempt = ({attempts})[1])
                           OR o.step_key NOT IN (
                               SELECT k.step_key FROM json_to_recordset($13::json)
                                                      AS k(step_key text)))) AS ok
            ), upd AS ("""
    hands_over = (
        f"({owner} IS NOT NULL AND $10::bool AND cardinality({keys}) = 1"
        f" AND $3::text NOT IN ({FINISHED_SQL}) AND $3::text <> '{Status.PAUSED.value}'"
        " AND control_request IS NULL AND (SELECT ok FROM alone))"
    )
    replacements = {
        "WITH upd AS (": alone,
        "owner = CASE WHEN $10::bool THEN NULL": (
            f"owner = CASE WHEN {hands_over} THEN {owner} WHEN $10::bool THEN NULL"
        ),
        "lease_until = CASE WHEN $11::bool THEN NULL": (
            f"lease_until = CASE WHEN {hands_over} THEN {claim_until} WHEN $11::bool THEN NULL"
        ),
        "last_commit = $16::int8": (
            "last_commit = $16::int8, claim_token = claim_token"
            f" + CASE WHEN {hands_over} THEN 1 ELSE 0 END"
        ),
        "RETURNING instance_id, status, control_request, owner, history_seq": (
            "RETURNING instance_id, status, control_request, owner, history_seq, claim_token"
        ),
        f"INSERT INTO {t}.sayiir_steps ({TICKET_COLUMNS})": (
            f"INSERT INTO {t}.sayiir_steps ({TICKET_COLUMNS}, owner, claim_token, lease_until)"
        ),
        # The claim columns come from a row that exists only when the commit did.
        "WHERE EXISTS (SELECT 1 FROM upd)\n                ON CONFLICT": f""", (
                    SELECT h.owner,
                           CASE WHEN h.owner IS NOT NULL
                                THEN nextval('{t}.sayiir_step_tokens') ELSE 0 END AS token,
                           CASE WHEN h.owner IS NOT NULL THEN {step_until} END AS until
                    FROM (SELECT CASE WHEN $10::bool AND upd.owner IS NOT NULL
                                      THEN {owner} END AS owner FROM upd) AS h
                ) AS claimed
                ON CONFLICT""",
        "RETURNING 1\n            )": "RETURNING owner, claim_token\n            )",
        "AS queued,control_request,": (
            "AS queued, control_request, claim_token AS instance_token,"
            f" $10::bool AND owner IS NOT NULL AND {owner} IS NOT NULL AS handed_over,"
            " (SELECT max(p.claim_token) FROM published AS p WHERE p.owner IS NOT NULL)"
            " AS step_token,"
        ),
    }
    statement = commit_and_publish
    for old, new in replacements.items():
        if statement.count(old) != 1:
            raise RuntimeError(f"internal error: the commit statement changed shape ({old!r})")
        statement = statement.replace(old, new)
    return statement
