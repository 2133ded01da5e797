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
    error_json,
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
    values = {
        "instance_id": record.instance_id,
        "workflow_id": record.workflow_id,
        "definition_hash": record.definition_hash,
        "status": record.status.value,
        "input": record.input,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "output": record.output,
        "error": error_json(record.error),
        "control": to_json(record.control, "control state"),
        "wake_at": record.wake_at,
        "reason": record.reason,
        "cancelled_by": record.cancelled_by,
        "paused_by": record.paused_by,
        "control_request": None if record.control_request is None else record.control_request.value,
        "owner": record.owner,
        "claim_token": record.claim_token,
        "lease_until": record.lease_until,
        "priority": record.priority,
    }
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


def failure_json(result: StepResult) -> str | None:
    """A shared step's failure: the error, whether it may be retried, its traceback."""
    if result.error is None:
        return None
    failure = {
        "error": result.error.to_dict(),
        "retryable": result.retryable,
        "traceback": result.traceback,
    }
    return to_json(failure, "step error")


def result_from_row(row: Mapping[str, Any]) -> StepResult:
    worker_id, started_at, finished_at = row["worker_id"], row["started_at"], row["finished_at"]
    if row["error"] is None:
        output = None if row["output"] is None else bytes(row["output"])
        return StepResult(worker_id, started_at, finished_at, output=output)
    failure = json.loads(row["error"])
    return StepResult(
        worker_id,
        started_at,
        finished_at,
        error=ErrorInfo.from_dict(failure["error"]),
        retryable=failure["retryable"],
        traceback=failure["traceback"],
    )
