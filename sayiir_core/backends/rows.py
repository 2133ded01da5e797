"""Row <-> record conversion shared by the SQL backends (SQLite, PostgreSQL, Django).

They store an instance in the same columns, with JSON text for the control state, the
error and history details, so one set of converters serves them all. Public for
backends outside the core (``sayiir_django``) that keep the same columns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sayiir_core.backends.base import ControlRequest, HistoryEvent, InstanceRecord, StepWrite
from sayiir_core.backends.rules import committed_record
from sayiir_core.backends.step_queue import StepResult
from sayiir_core.errors import BackendError
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status

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
# The row converters here and rules.committed_record spell out every field: a field
# added to InstanceRecord must be added to them (and to the schemas) too.
if tuple(f.name for f in dataclasses.fields(InstanceRecord)) != RECORD_COLUMNS:  # pragma: no cover
    raise ImportError("InstanceRecord changed: update RECORD_COLUMNS, committed_record, schemas")


def record_from_row(row: Sequence[Any]) -> InstanceRecord:
    """The record of a row holding ``RECORD_COLUMNS`` in that order."""
    return record_from_values(dict(zip(RECORD_COLUMNS, row, strict=True)))


def record_from_values(values: Mapping[str, Any]) -> InstanceRecord:
    """The record of ``RECORD_COLUMNS`` by name; ``BackendError`` for a corrupt row."""
    try:
        return _record(values)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(
            f"corrupt row for workflow instance {values.get('instance_id')!r}: {exc!r}"
        ) from exc


def _record(values: Mapping[str, Any]) -> InstanceRecord:
    error = values["error"]
    request = values["control_request"]
    output = values["output"]
    return InstanceRecord(
        instance_id=values["instance_id"],
        workflow_id=values["workflow_id"],
        definition_hash=values["definition_hash"],
        status=Status(values["status"]),
        # bytes() of bytes is the same object; drivers may hand back a memoryview.
        input=bytes(values["input"]),
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        output=None if output is None else bytes(output),
        error=ErrorInfo.from_dict(json.loads(error)) if error is not None else None,
        control=json.loads(values["control"]),
        wake_at=values["wake_at"],
        reason=values["reason"],
        cancelled_by=values["cancelled_by"],
        paused_by=values["paused_by"],
        control_request=ControlRequest(request) if request is not None else None,
        owner=values["owner"],
        claim_token=values["claim_token"],
        lease_until=values["lease_until"],
        priority=values["priority"],
    )


def record_values(record: InstanceRecord) -> dict[str, Any]:
    """The column values of ``record``, by ``RECORD_COLUMNS`` name (what a write stores)."""
    return {
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
        "control_request": record.control_request.value if record.control_request else None,
        "owner": record.owner,
        "claim_token": record.claim_token,
        "lease_until": record.lease_until,
        "priority": record.priority,
    }


def event_from_row(row: Sequence[Any]) -> HistoryEvent:
    kind, at, step_key, attempt, worker_id, detail, seq = row
    return HistoryEvent(
        kind=kind,
        at=at,
        step_key=step_key,
        attempt=attempt,
        worker_id=worker_id,
        detail=json.loads(detail) if detail is not None else None,
        seq=seq,
    )


def to_json(value: Mapping[str, Any] | Sequence[Any], what: str) -> str:
    try:
        return orjson.dumps(value, default=_plain_mapping).decode()
    except TypeError as exc:
        raise BackendError(f"cannot store {what} as JSON: {exc}") from exc


def _plain_mapping(value: object) -> dict[Any, Any]:
    # Records hold read-only mappings (MappingProxyType) that json cannot encode as such.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else to_json(error.to_dict(), "error")


def failure_json(result: StepResult) -> str | None:
    """A shared step's failure as stored: the error, whether it may be retried, its
    traceback; ``None`` for a success."""
    if result.error is None:
        return None
    failure = {
        "error": result.error.to_dict(),
        "retryable": result.retryable,
        "traceback": result.traceback,
    }
    return to_json(failure, "step error")


def step_result(
    worker_id: str,
    started_at: float,
    finished_at: float,
    output: bytes | None,
    failure: str | None,
) -> StepResult:
    """A shared step's stored outcome back (``failure`` as ``failure_json`` wrote it)."""
    if failure is None:
        return StepResult(
            worker_id, started_at, finished_at, output=None if output is None else bytes(output)
        )
    stored = json.loads(failure)
    return StepResult(
        worker_id,
        started_at,
        finished_at,
        error=ErrorInfo.from_dict(stored["error"]),
        retryable=stored["retryable"],
        traceback=stored["traceback"],
    )


# A record that holds a claim and a control request. Passing it through
# rules.committed_record shows which of those a write clears, so a SQL commit can apply
# the shared rule in one UPDATE without first reading the row.
_PROBE = InstanceRecord(
    instance_id="",
    workflow_id="",
    definition_hash="",
    status=Status.RUNNING,
    input=b"",
    created_at=0.0,
    updated_at=0.0,
    control_request=ControlRequest.CANCEL,
    owner="probe",
    lease_until=1.0,
)


def commit_effects(write: StepWrite) -> InstanceRecord:
    """``write`` applied to a claimed record with a pending request: what it sets and clears."""
    return committed_record(_PROBE, write)
