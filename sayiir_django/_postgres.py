"""PostgreSQL's hot paths in one statement each: a step's commit, a new instance.

Through the ORM a commit is a transaction of six round trips (BEGIN, lock the row,
insert the checkpoints, insert the history, update the row, COMMIT), which made a step
on ``DjangoBackend`` cost about three times one on ``PostgresBackend``. Here it is one
statement, run in autocommit through the Django connection, so one round trip and one
implicit transaction, as ``PostgresBackend`` does it (and prepared once per connection,
see ``_prepared``):

- the ``UPDATE`` of the instance row is the fence (current claim token, an owner) and
  takes the row lock; every other part reads its ``RETURNING`` and so runs only if it
  matched;
- ``SET`` expressions see the row as it was, which is what ``rules.settled_status``
  needs (the control request pending before the commit);
- history entries number on from ``history_seq``, bumped by the same ``UPDATE``;
- a duplicate checkpoint key aborts all of it (the unique constraint);
- ``pg_notify`` goes with it, delivered at its commit;
- a dispatched advance's newly ready steps (``AdvanceQueue.commit_and_publish``) are
  queued by the same statement, so only if the fence held.

What the commit sets and clears comes from ``rules.committed_record``, run on a probe
record (``rows.commit_effects``), so the shared rule stays the one source of truth.

A new instance is likewise one ``INSERT ... ON CONFLICT DO NOTHING`` with its "started"
history entry; only an id that exists already takes the ORM's path, which applies the
conflict policy.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sayiir_core.backends.base import ControlRequest, HistoryEvent, InstanceRecord, StepWrite
from sayiir_core.backends.rows import RECORD_COLUMNS, commit_effects, error_json, to_json
from sayiir_core.backends.rules import settled_status
from sayiir_core.backends.step_queue import StepTicket
from sayiir_core.status import Status
from sayiir_django._prepared import Statement, fetch_one
from sayiir_django._records import (
    created_timestamp,
    event_columns,
    latest_step,
    record_columns,
)
from sayiir_django._wakeups import DONE_CHANNEL, WORK_CHANNEL
from sayiir_django.models import (
    Checkpoint,
    HistoryEntry,
    PendingSignal,
    SharedStep,
    WorkflowInstance,
)

CHECKPOINT_CONSTRAINT = "sayiir_checkpoint_once_per_step"
_RUNNABLE = (Status.PENDING.value, Status.RUNNING.value)
_FINISHED = tuple(status.value for status in Status if status.is_terminal)


@dataclass(frozen=True)
class CommitOutcome:
    """What the statement returned: the fence held, and what the instance became."""

    control_request: ControlRequest | None
    runnable_and_free: bool
    finished: bool


def commit(
    alias: str,
    instance_id: str,
    token: int,
    write: StepWrite,
    commit_id: int,
    tickets: Sequence[StepTicket] = (),
) -> CommitOutcome | None:
    """Apply ``write`` under claim ``token``; ``None`` if the fence refused it.

    Queues ``tickets`` (steps of this instance) too if it was applied; a ticket already
    queued is left as it is. Raises ``IntegrityError`` (from the checkpoint constraint)
    for a step already checkpointed, having changed nothing.
    """
    step = latest_step(write.events)
    statement = _statement(
        checkpoints=bool(write.checkpoints),
        events=bool(write.events),
        names_step=step is not None,
        consumes_signal=write.consumed_signal is not None,
        clears_steps=write.status.is_terminal or bool(write.checkpoints),
        all_steps=write.status.is_terminal,
        publishes=bool(tickets),
    )
    effects = commit_effects(write)
    params: dict[str, Any] = {
        "instance_id": instance_id,
        "token": token,
        # rules.settled_status, given the request pending before: pause or anything else.
        "status_if_pausing": settled_status(write.status, ControlRequest.PAUSE).value,
        "status_otherwise": settled_status(write.status, None).value,
        "control": to_json(effects.control, "control state"),
        "output": effects.output,
        "error": error_json(effects.error),
        "wake_at": effects.wake_at,
        "updated_at": effects.updated_at,
        "clears_request": effects.control_request is None,
        "releases": effects.owner is None,
        "definition_hash": write.definition_hash,
        "priority": write.priority,
        "events": len(write.events),
        "commit_id": commit_id,
        # Lists go as one JSON text each: the client quotes a string far faster than an
        # array (psycopg quotes arrays element by element in Python; 0.1 ms a commit).
        "checkpoints": json.dumps([[key, payload.hex()] for key, payload in write.checkpoints]),
        "history": json.dumps(
            [
                [
                    e.kind,
                    e.at,
                    e.step_key,
                    e.attempt,
                    e.worker_id,
                    None if e.detail is None else to_json(e.detail, "history detail"),
                ]
                for e in write.events
            ]
        ),
        "signal": write.consumed_signal,
        "work_channel": WORK_CHANNEL,
        "done_channel": DONE_CHANNEL,
        "tickets": json.dumps(
            [
                [
                    t.ref.step_key,
                    t.ref.attempt,
                    t.workflow_id,
                    t.definition_hash,
                    t.input.hex(),
                    t.priority,
                    t.now,
                ]
                for t in tickets
            ]
        ),
    }
    if step is not None:
        params["current_step"], params["attempt"] = step
    row = fetch_one(alias, statement, params)
    if row is None:
        return None
    request, runnable_and_free, finished, _woke, _told = row
    return CommitOutcome(
        None if request is None else ControlRequest(request),
        bool(runnable_and_free),
        bool(finished),
    )


def _table(model: Any) -> str:
    return f'"{model._meta.db_table}"'


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


@functools.cache
def _statement(
    *,
    checkpoints: bool,
    events: bool,
    names_step: bool,
    consumes_signal: bool,
    clears_steps: bool,
    all_steps: bool,
    publishes: bool = False,
) -> Statement:
    """The commit statement for one shape of write; parts a write does not need are left
    out, so the server does no work for them."""
    instances, history = _table(WorkflowInstance), _table(HistoryEntry)
    step_assignment = (
        "current_step = %(current_step)s::text, attempt = %(attempt)s::int4," if names_step else ""
    )
    # Its commits look for queue rows to clean up from now on.
    flags_steps = "has_shared_steps = true," if publishes else ""
    parts = [
        f"""
        WITH upd AS (
            UPDATE {instances} SET
                status = CASE WHEN control_request = '{ControlRequest.PAUSE.value}'
                              THEN %(status_if_pausing)s::text
                              ELSE %(status_otherwise)s::text END,
                control = %(control)s::text, output = %(output)s::bytea,
                error = %(error)s::text, wake_at = %(wake_at)s::float8,
                updated_at = %(updated_at)s::float8,
                control_request = CASE WHEN %(clears_request)s::bool
                                       THEN NULL ELSE control_request END,
                owner = CASE WHEN %(releases)s::bool THEN NULL ELSE owner END,
                lease_until = CASE WHEN %(releases)s::bool THEN NULL ELSE lease_until END,
                definition_hash = COALESCE(%(definition_hash)s::text, definition_hash),
                priority = COALESCE(%(priority)s::int2, priority),
                history_seq = history_seq + %(events)s::int4,
                {step_assignment}
                {flags_steps}
                last_commit = %(commit_id)s::int8
            WHERE instance_id = %(instance_id)s::text AND claim_token = %(token)s::int8
              AND owner IS NOT NULL
            RETURNING id, history_seq, has_shared_steps, status, control_request, owner
        )"""
    ]
    if checkpoints:
        parts.append(
            f"""
        checkpoints AS (
            INSERT INTO {_table(Checkpoint)} (instance_id, step_key, payload)
            SELECT upd.id, c.item->>0, decode(c.item->>1, 'hex')
            FROM upd, json_array_elements(%(checkpoints)s::json) WITH ORDINALITY AS c(item, n)
            ORDER BY c.n
        )"""
        )
    if events:
        parts.append(
            f"""
        events AS (
            INSERT INTO {history}
                (instance_id, seq, kind, at, step_key, attempt, worker_id, detail)
            SELECT %(instance_id)s::text, upd.history_seq - %(events)s::int4 + e.n::int4,
                   e.item->>0, (e.item->>1)::float8, e.item->>2, (e.item->>3)::int4,
                   e.item->>4, e.item->>5
            FROM upd, json_array_elements(%(history)s::json) WITH ORDINALITY AS e(item, n)
        )"""
        )
    if consumes_signal:
        parts.append(
            f"""
        consumed AS (
            DELETE FROM {_table(PendingSignal)} AS s USING upd
            WHERE s.id = %(signal)s::int8 AND s.instance_id = upd.id
        )"""
        )
    if clears_steps:
        # A checkpoint replaces its step's queue rows; a finished instance needs none.
        which = (
            ""
            if all_steps
            else "AND s.step_key IN "
            "(SELECT c->>0 FROM json_array_elements(%(checkpoints)s::json) AS c)"
        )
        parts.append(
            f"""
        shared AS (
            DELETE FROM {_table(SharedStep)} AS s USING upd
            WHERE upd.has_shared_steps AND s.instance_id = upd.id {which}
        )"""
        )
    if publishes:
        # Sees the queue as it was before this statement, like ``shared`` does: a
        # ticket is never deleted by the commit that queues it.
        parts.append(
            f"""
        published AS (
            INSERT INTO {_table(SharedStep)} (instance_id, step_key, attempt, workflow_id,
                                              definition_hash, input, priority, queued_at,
                                              claims)
            SELECT upd.id, t->>0, (t->>1)::int4, t->>2, t->>3, decode(t->>4, 'hex'),
                   (t->>5)::int2, (t->>6)::float8, 0
            FROM upd, json_array_elements(%(tickets)s::json) AS t
            ON CONFLICT DO NOTHING
        )"""
        )
    # Published steps are work for idle workers, whatever the instance became.
    wakes = "true" if publishes else f"owner IS NULL AND status IN ({_in(_RUNNABLE)})"
    return Statement.of(
        ",".join(parts)
        + f"""
        SELECT control_request,
               owner IS NULL AND status IN ({_in(_RUNNABLE)}) AS runnable_and_free,
               status IN ({_in(_FINISHED)}) AS finished,
               CASE WHEN {wakes}
                    THEN pg_notify(%(work_channel)s::text, '') END AS woke,
               CASE WHEN status IN ({_in(_FINISHED)})
                    THEN pg_notify(%(done_channel)s::text, %(instance_id)s::text) END AS told
        FROM upd
        """
    )


def insert_new(alias: str, record: InstanceRecord, started: HistoryEvent) -> bool:
    """Insert ``record`` and its first history entry unless its id exists; ``False`` if it
    does (nothing written).

    The entry numbers on from any history the id has left (``terminate_existing``
    keeps the history of the instance it replaces).
    """
    params = {
        **record_columns(record),
        "created": created_timestamp(record.created_at),
        **{f"event_{k}": v for k, v in event_columns(record.instance_id, 0, started).items()},
        "work_channel": WORK_CHANNEL,
    }
    return fetch_one(alias, _insert_statement(), params) is not None


@functools.cache
def _insert_statement() -> Statement:
    instances, history = _table(WorkflowInstance), _table(HistoryEntry)
    types = {
        "input": "bytea",
        "output": "bytea",
        "created_at": "float8",
        "updated_at": "float8",
        "wake_at": "float8",
        "lease_until": "float8",
        "claim_token": "int8",
        "priority": "int2",
    }
    columns = list(RECORD_COLUMNS)
    values = ", ".join(f"%({c})s::{types.get(c, 'text')}" for c in columns)
    return Statement.of(f"""
        WITH ins AS (
            INSERT INTO {instances}
                ({", ".join(columns)}, created, history_seq, has_shared_steps)
            VALUES ({values}, %(created)s::timestamptz,
                    COALESCE((SELECT max(seq) FROM {history}
                              WHERE instance_id = %(instance_id)s::text), 0) + 1,
                    false)
            ON CONFLICT (instance_id) DO NOTHING
            RETURNING instance_id, history_seq, status
        ), events AS (
            INSERT INTO {history}
                (instance_id, seq, kind, at, step_key, attempt, worker_id, detail)
            SELECT ins.instance_id, ins.history_seq, %(event_kind)s::text,
                   %(event_at)s::float8, %(event_step_key)s::text, %(event_attempt)s::int4,
                   %(event_worker_id)s::text, %(event_detail)s::text
            FROM ins
        )
        SELECT CASE WHEN status = '{Status.PENDING.value}'
                    THEN pg_notify(%(work_channel)s::text, '') END AS woke
        FROM ins
    """)
