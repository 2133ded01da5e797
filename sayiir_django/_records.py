"""Rows <-> the core's records: ``WorkflowInstance`` <-> ``InstanceRecord`` and friends.

The backend reads and writes rows as dicts of column values (``.values()`` and
``.update(**fields)``), so one list of columns, here, serves every query.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sayiir_core.backends.base import ControlRequest, HistoryEvent, InstanceRecord
from sayiir_core.backends.step_queue import StepResult
from sayiir_core.errors import BackendError
from sayiir_core.status import ErrorInfo, Status

# The columns an InstanceRecord is read from, in the record's own field names.
RECORD_COLUMNS = (
    "instance_id",
    "workflow_id",
    "definition_hash",
    "status",
    "input",
    "created_at",
    "updated_at",
    "output",
    "error",
    "control",
    "wake_at",
    "reason",
    "cancelled_by",
    "paused_by",
    "control_request",
    "owner",
    "claim_token",
    "lease_until",
    "priority",
)
# Read with a record inside a write: the row's key and its history counter.
ROW_COLUMNS = ("id", "history_seq", "has_shared_steps", *RECORD_COLUMNS)
# Everything but the identity and the write-once columns.
MUTABLE_COLUMNS = tuple(
    c for c in RECORD_COLUMNS if c not in ("instance_id", "input", "created_at")
)


def record_from_row(row: Mapping[str, Any]) -> InstanceRecord:
    try:
        return InstanceRecord(
            instance_id=row["instance_id"],
            workflow_id=row["workflow_id"],
            definition_hash=row["definition_hash"],
            status=Status(row["status"]),
            input=bytes(row["input"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            output=None if row["output"] is None else bytes(row["output"]),
            error=error_from_json(row["error"]),
            control=json.loads(row["control"]),
            wake_at=row["wake_at"],
            reason=row["reason"],
            cancelled_by=row["cancelled_by"],
            paused_by=row["paused_by"],
            control_request=(
                None if row["control_request"] is None else ControlRequest(row["control_request"])
            ),
            owner=row["owner"],
            claim_token=row["claim_token"],
            lease_until=row["lease_until"],
            priority=row["priority"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(
            f"corrupt row for workflow instance {row.get('instance_id')!r}: {exc!r}"
        ) from exc


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


def to_json(value: Mapping[str, Any], what: str) -> str:
    try:
        return orjson.dumps(value, default=_plain_mapping).decode()
    except TypeError as exc:
        raise BackendError(f"cannot store {what} as JSON: {exc}") from exc


def _plain_mapping(value: object) -> dict[Any, Any]:
    # Records hold read-only mappings (MappingProxyType) that orjson cannot encode as such.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else to_json(error.to_dict(), "error")


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
