"""SQL statements, row <-> record conversion and in-transaction helpers for SQLite.

Kept apart from the backend so the backend reads as "transaction, rule, write" and the
column lists live in one place. Statements are constant strings with parameters, so the
``sqlite3`` statement cache prepares each one once per connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sayiir_core.backends.base import HistoryEvent, InstanceRecord, StepWrite
from sayiir_core.backends.rows import (
    RECORD_COLUMNS,
    commit_effects,
    error_json,
    record_from_row,
    record_values,
    to_json,
)
from sayiir_core.backends.rules import missing
from sayiir_core.errors import LeaseLostError
from sayiir_core.status import Status

_SELECT_LIST = ", ".join(RECORD_COLUMNS)
# Everything but the identity and the write-once columns.
_MUTABLE = [c for c in RECORD_COLUMNS if c not in ("instance_id", "input", "created_at")]

SELECT_RECORD = f"SELECT {_SELECT_LIST} FROM sayiir_instances WHERE instance_id = ?"
INSERT_RECORD = (
    f"INSERT INTO sayiir_instances ({_SELECT_LIST}) "
    f"VALUES ({', '.join(':' + c for c in RECORD_COLUMNS)})"
)
UPDATE_RECORD = (
    f"UPDATE sayiir_instances SET {', '.join(f'{c} = :{c}' for c in _MUTABLE)} "
    "WHERE instance_id = :instance_id"
)
DELETE_INSTANCE = "DELETE FROM sayiir_instances WHERE instance_id = ?"
SELECT_TOKEN = "SELECT claim_token FROM sayiir_instances WHERE instance_id = ?"

CLAIM = (
    "UPDATE sayiir_instances SET owner = ?, claim_token = claim_token + 1, lease_until = ? "
    f"WHERE instance_id = ? RETURNING {_SELECT_LIST}"
)
TAKE = (
    "UPDATE sayiir_instances SET owner = ?, claim_token = ?, lease_until = ? WHERE instance_id = ?"
)
RENEW = (
    "UPDATE sayiir_instances SET lease_until = ? "
    "WHERE instance_id = ? AND claim_token = ? AND owner IS NOT NULL"
)

# The fenced step write: the WHERE clause is the fencing check, and RETURNING hands back
# the pending control request, so a step costs this one statement plus its inserts.
# status is left out on purpose: naming an indexed column in SET rewrites its index
# entry even when the value is unchanged, which costs an extra page per commit; most
# steps keep the status, so the backend sets it with SET_STATUS only when it changed.
# Numbered parameters, in commit_params' order: sqlite3 binds a tuple by position at
# once, where named ones cost a name lookup each (12 of them, on every step).
COMMIT_RECORD = """
UPDATE sayiir_instances SET
    control = ?1, output = ?2, error = ?3, wake_at = ?4, updated_at = ?5,
    control_request = CASE WHEN ?6 THEN NULL ELSE control_request END,
    owner = CASE WHEN ?7 THEN NULL ELSE owner END,
    lease_until = CASE WHEN ?8 THEN NULL ELSE lease_until END,
    definition_hash = COALESCE(?9, definition_hash),
    priority = COALESCE(?10, priority)
WHERE instance_id = ?11 AND claim_token = ?12 AND owner IS NOT NULL
RETURNING status, control_request
"""
SET_STATUS = "UPDATE sayiir_instances SET status = ? WHERE instance_id = ?"
SELECT_REQUEST = (
    "SELECT control_request FROM sayiir_instances WHERE instance_id = ? AND claim_token = ?"
)

SELECT_CHECKPOINTS = (
    "SELECT step_key, payload FROM sayiir_checkpoints WHERE instance_id = ? ORDER BY seq"
)
SELECT_CHECKPOINT_SEQS = (
    "SELECT seq, step_key FROM sayiir_checkpoints WHERE instance_id = ? ORDER BY seq"
)
SELECT_CHECKPOINT = "SELECT payload FROM sayiir_checkpoints WHERE instance_id = ? AND step_key = ?"
INSERT_CHECKPOINT = (
    "INSERT INTO sayiir_checkpoints (instance_id, step_key, payload) VALUES (?, ?, ?)"
)
DELETE_CHECKPOINTS = "DELETE FROM sayiir_checkpoints WHERE instance_id = ?"
DELETE_CHECKPOINTS_FROM = "DELETE FROM sayiir_checkpoints WHERE instance_id = ? AND seq >= ?"

INSERT_SIGNAL = (
    "INSERT INTO sayiir_signals (instance_id, name, payload, sent_at) VALUES (?, ?, ?, ?)"
)
NEXT_SIGNAL = (
    "SELECT signal_id, name, payload FROM sayiir_signals "
    "WHERE instance_id = ? AND name = ? ORDER BY signal_id LIMIT 1"
)
COUNT_SIGNALS = "SELECT count(*) FROM sayiir_signals WHERE instance_id = ?"
DELETE_SIGNAL = "DELETE FROM sayiir_signals WHERE signal_id = ? AND instance_id = ?"
DELETE_SIGNALS = "DELETE FROM sayiir_signals WHERE instance_id = ?"

# seq is computed in the INSERT itself: the (instance_id, seq) primary key makes MAX an
# index lookup, and the write lock held by the transaction makes it race-free.
INSERT_EVENT = """
INSERT INTO sayiir_history (instance_id, seq, kind, at, step_key, attempt, worker_id, detail)
VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM sayiir_history WHERE instance_id = ?1),
        ?2, ?3, ?4, ?5, ?6, ?7)
"""
SELECT_EVENTS = (
    "SELECT kind, at, step_key, attempt, worker_id, detail, seq FROM sayiir_history "
    "WHERE instance_id = ? ORDER BY seq"
)
INSTANCE_EXISTS = "SELECT 1 FROM sayiir_instances WHERE instance_id = ?"


def _sql_list(statuses: Sequence[Status]) -> str:
    return ", ".join(f"'{status.value}'" for status in statuses)


# rules.is_claimable as SQL, so LIMIT counts only instances that can really be claimed;
# the backend still passes each row through is_claimable before taking it.
_CLAIMABLE = f"""
status IN ({_sql_list([s for s in Status if not s.is_terminal])})
AND (owner IS NULL OR COALESCE(lease_until, 0) <= :now)
AND (
    control_request IS NOT NULL
    OR status IN ({_sql_list([Status.PENDING, Status.RUNNING])})
    OR (status IN ({_sql_list([Status.WAITING, Status.AWAITING_SIGNAL])})
        AND wake_at IS NOT NULL AND wake_at <= :now)
)
"""


def claimable_query(workflow_count: int) -> str:
    """Up to ``:limit`` claimable instances of the given workflow definitions, in order."""
    definitions = " OR ".join(
        f"(workflow_id = :wf{i} AND definition_hash = :hash{i})" for i in range(workflow_count)
    )
    return (
        f"SELECT {_SELECT_LIST} FROM sayiir_instances "
        f"WHERE ({definitions}) AND {_CLAIMABLE}"
        "ORDER BY priority, COALESCE(wake_at, 0), created_at, seq LIMIT :limit"
    )


def claimable_params(workflows: Mapping[str, str], now: float, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now, "limit": limit}
    for i, (workflow_id, definition_hash) in enumerate(workflows.items()):
        params[f"wf{i}"] = workflow_id
        params[f"hash{i}"] = definition_hash
    return params


def list_query(*, by_status: bool, by_workflow: bool, after: bool) -> str:
    """Newest first; one of eight fixed shapes so each stays a cached statement."""
    where = [
        clause
        for clause, wanted in (
            ("status = :status", by_status),
            ("workflow_id = :workflow_id", by_workflow),
            ("seq < :after", after),
        )
        if wanted
    ]
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    return (
        f"SELECT seq, {_SELECT_LIST} FROM sayiir_instances {condition}"
        "ORDER BY seq DESC LIMIT :limit"
    )


def commit_params(instance_id: str, token: int, write: StepWrite) -> tuple[str, tuple[Any, ...]]:
    """The status to store (for the caller's ``SET_STATUS``), and ``COMMIT_RECORD``'s
    parameters."""
    after = commit_effects(write)
    # The flags go as 1/0, not True/False: sqlite3 binds a bool only after failing to
    # find an adapter for it (raising and clearing AttributeErrors), an exact int at once.
    return after.status.value, (
        to_json(after.control, "control state"),
        after.output,
        error_json(after.error),
        after.wake_at,
        after.updated_at,
        1 if after.control_request is None else 0,
        1 if after.owner is None else 0,
        1 if after.lease_until is None else 0,
        write.definition_hash,
        write.priority,
        instance_id,
        token,
    )


def event_params(instance_id: str, event: HistoryEvent) -> tuple[Any, ...]:
    detail = None if event.detail is None else to_json(event.detail, "history detail")
    return (
        instance_id,
        event.kind,
        event.at,
        event.step_key,
        event.attempt,
        event.worker_id,
        detail,
    )


def rollback(conn: sqlite3.Connection, cause: BaseException) -> None:
    """Roll back after ``cause``; a failing rollback is noted on ``cause``, not raised.

    The original error is what the caller needs to see; SQLite also rolls back an
    unfinished transaction itself when the connection closes.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        cause.add_note(f"rollback also failed: {exc}")


# -- reads and writes inside a transaction, on the connection's thread ---------------


def require_record(conn: sqlite3.Connection, instance_id: str) -> InstanceRecord:
    row = conn.execute(SELECT_RECORD, (instance_id,)).fetchone()
    if row is None:
        raise missing(instance_id)
    return record_from_row(row)


def checkpoints(conn: sqlite3.Connection, instance_id: str) -> dict[str, bytes]:
    rows = conn.execute(SELECT_CHECKPOINTS, (instance_id,))
    return {key: bytes(payload) for key, payload in rows}


def append_events(
    conn: sqlite3.Connection, instance_id: str, events: Sequence[HistoryEvent]
) -> None:
    for event in events:
        conn.execute(INSERT_EVENT, event_params(instance_id, event))


def save_record(
    conn: sqlite3.Connection,
    before: InstanceRecord,
    after: InstanceRecord,
    events: Sequence[HistoryEvent],
) -> None:
    """Write ``after`` if it differs from ``before``, and append ``events``."""
    if after != before:
        conn.execute(UPDATE_RECORD, record_values(after))
    append_events(conn, after.instance_id, events)


def refusal(conn: sqlite3.Connection, instance_id: str, token: int) -> Exception:
    """Why a fenced write matched no row: no such instance, or the claim moved on."""
    row = conn.execute(SELECT_TOKEN, (instance_id,)).fetchone()
    if row is None:
        return missing(instance_id)
    return LeaseLostError(
        f"instance {instance_id!r}: claim {token} was taken over "
        f"(current claim {row[0]}); write refused"
    )
