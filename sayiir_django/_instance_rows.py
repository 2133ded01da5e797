"""An instance's rows inside an operation's transaction: read (locked), write back, history.

Every operation that changes an instance reads its row, asks ``sayiir_core.backends.rules``
for the new record, and writes what changed with its history entries. These run on every
step (SQLite's commit is built of them), so they are plain SQL with fixed statement texts
rather than querysets: Django compiles a queryset anew on each call, which cost about
1 ms of CPU per step on SQLite (S2), several times the statements' own time. The texts
are built once per database vendor and column set, which also lets SQLite reuse its
prepared statements.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from sayiir_core.backends.base import HistoryEvent, InstanceRecord
from sayiir_core.backends.rules import missing
from sayiir_core.errors import LeaseLostError
from sayiir_core.status import Status
from sayiir_django._records import (
    ROW_COLUMNS,
    changed_columns,
    created_timestamp,
    event_columns,
    latest_step,
    record_columns,
)
from sayiir_django._transactions import Database
from sayiir_django.models import Checkpoint, HistoryEntry, WorkflowInstance

READY = [Status.PENDING.value, Status.RUNNING.value]
PARKED = [Status.WAITING.value, Status.AWAITING_SIGNAL.value]
UNFINISHED = [status.value for status in Status if not status.is_terminal]
FINISHED = [status.value for status in Status if status.is_terminal]
_HISTORY_COLUMNS = (
    "instance_id",
    "seq",
    "kind",
    "at",
    "step_key",
    "attempt",
    "worker_id",
    "detail",
)


def instances(db: Database) -> QuerySet[WorkflowInstance]:
    return WorkflowInstance.objects.using(db.alias)


def locked(db: Database, qs: QuerySet[Any], *, skip_locked: bool = False) -> QuerySet[Any]:
    """``qs`` with its rows locked on PostgreSQL; SQLite's write lock covers the database."""
    if db.vendor == "postgresql":
        return qs.select_for_update(skip_locked=skip_locked, of=("self",))
    return qs


def read_row(db: Database, instance_id: str) -> dict[str, Any] | None:
    """The instance's ``ROW_COLUMNS`` by name, its row locked on PostgreSQL."""
    with connections[db.alias].cursor() as cursor:
        cursor.execute(_select_row(db.alias, db.vendor), [instance_id])
        found = cursor.fetchone()
    return None if found is None else dict(zip(ROW_COLUMNS, found, strict=True))


def require(db: Database, instance_id: str) -> dict[str, Any]:
    row = read_row(db, instance_id)
    if row is None:
        raise missing(instance_id)
    return row


def append_history(
    db: Database, instance_id: str, last_seq: int, events: Sequence[HistoryEvent]
) -> int:
    """Insert ``events`` after history entry ``last_seq``; returns the new last seq."""
    if events:
        rows = [
            [event_columns(instance_id, last_seq + n, event)[c] for c in _HISTORY_COLUMNS]
            for n, event in enumerate(events, 1)
        ]
        with connections[db.alias].cursor() as cursor:
            cursor.executemany(_insert_history(db.alias, db.vendor), rows)
    return last_seq + len(events)


def save(
    db: Database,
    row: dict[str, Any],
    before: InstanceRecord,
    after: InstanceRecord,
    events: Sequence[HistoryEvent],
    **extra: Any,
) -> None:
    """Write what changed between ``before`` and ``after``, and append ``events``."""
    fields = changed_columns(before, after)
    if events:
        fields["history_seq"] = append_history(db, after.instance_id, row["history_seq"], events)
        step = latest_step(events)
        if step is not None:
            fields["current_step"], fields["attempt"] = step
    fields.update(extra)
    if fields:
        columns = tuple(fields)
        with connections[db.alias].cursor() as cursor:
            cursor.execute(_update_row(db.alias, db.vendor, columns), [*fields.values(), row["id"]])


def insert_checkpoints(db: Database, row_id: int, checkpoints: Sequence[tuple[str, bytes]]) -> None:
    """Raises ``IntegrityError`` for a step already checkpointed."""
    with connections[db.alias].cursor() as cursor:
        cursor.executemany(
            _insert_checkpoint(db.alias, db.vendor),
            [(row_id, key, payload) for key, payload in checkpoints],
        )


def insert_instance(db: Database, record: InstanceRecord, history_seq: int) -> WorkflowInstance:
    return instances(db).create(
        **record_columns(record),
        created=created_timestamp(record.created_at),
        history_seq=history_seq,
    )


def last_history_seq(db: Database, instance_id: str) -> int:
    last = (
        HistoryEntry.objects.using(db.alias)
        .filter(instance_id=instance_id)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return last or 0


def checkpoints_of(db: Database, row_ids: Sequence[int]) -> dict[int, dict[str, bytes]]:
    """The checkpoints of each instance row, in the order they were written."""
    found: dict[int, dict[str, bytes]] = {row_id: {} for row_id in row_ids}
    rows = (
        Checkpoint.objects.using(db.alias)
        .filter(instance_id__in=row_ids)
        .order_by("id")
        .values_list("instance_id", "step_key", "payload")
    )
    for row_id, key, payload in rows:
        found[row_id][key] = bytes(payload)
    return found


def lease_lost(instance_id: str, token: int, current: int) -> LeaseLostError:
    return LeaseLostError(
        f"instance {instance_id!r}: claim {token} was taken over (current claim {current}); "
        "write refused"
    )


# -- statement texts, built once per alias (its vendor's quoting) -----------------------
# The vendor is part of the key: tests point one alias at another database.


def _name(alias: str, name: str) -> str:
    return str(connections[alias].ops.quote_name(name))


@functools.cache
def _select_row(alias: str, vendor: str) -> str:
    columns = ", ".join(_name(alias, c) for c in ROW_COLUMNS)
    table = _name(alias, WorkflowInstance._meta.db_table)
    lock = " FOR UPDATE" if vendor == "postgresql" else ""
    return f"SELECT {columns} FROM {table} WHERE {_name(alias, 'instance_id')} = %s{lock}"


@functools.cache
def _update_row(alias: str, vendor: str, columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{_name(alias, c)} = %s" for c in columns)
    table = _name(alias, WorkflowInstance._meta.db_table)
    return f"UPDATE {table} SET {assignments} WHERE {_name(alias, 'id')} = %s"


@functools.cache
def _insert_history(alias: str, vendor: str) -> str:
    columns = ", ".join(_name(alias, c) for c in _HISTORY_COLUMNS)
    values = ", ".join("%s" for _ in _HISTORY_COLUMNS)
    table = _name(alias, HistoryEntry._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({values})"


@functools.cache
def _insert_checkpoint(alias: str, vendor: str) -> str:
    columns = ", ".join(_name(alias, c) for c in ("instance_id", "step_key", "payload"))
    table = _name(alias, Checkpoint._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s)"
