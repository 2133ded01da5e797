"""Rows <-> the core's records: ``WorkflowInstance`` <-> ``InstanceRecord`` and friends.

The backend reads and writes rows as dicts of column values (``.values()`` and
``.update(**fields)``), so one list of columns, here, serves every query.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sayiir_core.backends.base import HistoryEvent, InstanceRecord
from sayiir_core.backends.rows import (
    RECORD_COLUMNS,
    record_values,
    step_result,
    to_json,
)
from sayiir_core.backends.step_queue import StepResult
from sayiir_core.status import ErrorInfo

# Read with a record inside a write: the row's key and its history counter.
ROW_COLUMNS = ("id", "history_seq", "has_shared_steps", *RECORD_COLUMNS)
# Everything but the identity and the write-once columns.
MUTABLE_COLUMNS = tuple(
    c for c in RECORD_COLUMNS if c not in ("instance_id", "input", "created_at")
)


def record_columns(
    record: InstanceRecord, *, only: Sequence[str] = RECORD_COLUMNS
) -> dict[str, Any]:
    """Column values for ``record`` (all of them, or ``only`` those)."""
    values = record_values(record)
    return {column: values[column] for column in only}


def changed_columns(before: InstanceRecord, after: InstanceRecord) -> dict[str, Any]:
    """The mutable columns whose value differs between two records."""
    old = record_columns(before, only=MUTABLE_COLUMNS)
    new = record_columns(after, only=MUTABLE_COLUMNS)
    return {column: value for column, value in new.items() if old[column] != value}


def created_timestamp(seconds: float) -> dt.datetime:
    """The creation time as an aware UTC timestamp, for the admin's date filters."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def event_from_row(row: Mapping[str, Any]) -> HistoryEvent:
    return HistoryEvent(
        kind=row["kind"],
        at=row["at"],
        step_key=row["step_key"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        detail=None if row["detail"] is None else json.loads(row["detail"]),
        seq=row["seq"],
    )


def event_columns(instance_id: str, seq: int, event: HistoryEvent) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "seq": seq,
        "kind": event.kind,
        "at": event.at,
        "step_key": event.step_key,
        "attempt": event.attempt,
        "worker_id": event.worker_id,
        "detail": None if event.detail is None else to_json(event.detail, "history detail"),
    }


def latest_step(events: Sequence[HistoryEvent]) -> tuple[str, int | None] | None:
    """The step the last of ``events`` that names one is about, with its attempt."""
    for event in reversed(events):
        if event.step_key is not None:
            return event.step_key, event.attempt
    return None


def error_from_json(text: str | None) -> ErrorInfo | None:
    return None if text is None else ErrorInfo.from_dict(json.loads(text))


def result_from_row(row: Mapping[str, Any]) -> StepResult:
    return step_result(
        row["worker_id"], row["started_at"], row["finished_at"], row["output"], row["error"]
    )
