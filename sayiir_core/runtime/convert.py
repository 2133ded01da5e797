"""Conversions between stored records and the machine's snapshots and statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sayiir_core.backends.base import InstanceRecord, LoadedInstance
from sayiir_core.codec import Codec
from sayiir_core.errors import (
    InstanceCancelledError,
    InvalidStateError,
    SerializationError,
    SignalTimeoutError,
    TaskError,
    TaskTimeoutError,
    WorkflowError,
)
from sayiir_core.machine import ErrorInfo, Snapshot
from sayiir_core.status import Status, WorkflowStatus


def snapshot_from(loaded: LoadedInstance, codec: Codec) -> Snapshot:
    record = loaded.record
    control = record.control
    return Snapshot(
        input=codec.decode(record.input),
        status=record.status,
        results={key: codec.decode(payload) for key, payload in loaded.checkpoints.items()},
        attempts=dict(control.get("attempts", {})),
        retry_at=dict(control.get("retry_at", {})),
        timers=dict(control.get("timers", {})),
        output=codec.decode(record.output) if record.output is not None else None,
        error=record.error,
    )


def status_from(record: InstanceRecord, codec: Codec) -> WorkflowStatus:
    error = record.error
    parked = record.status in (Status.WAITING, Status.AWAITING_SIGNAL)
    delays = record.control.get("delays", []) if record.status is Status.WAITING else []
    signals = record.control.get("signals", {}) if record.status is Status.AWAITING_SIGNAL else {}
    signal_id = next(iter(signals), None)
    return WorkflowStatus(
        status=record.status.reported,
        instance_id=record.instance_id,
        workflow_id=record.workflow_id,
        output=codec.decode(record.output) if record.output is not None else None,
        error=error.full_text() if error is not None else None,
        error_type=error.error_type if error is not None else None,
        failed_task_id=error.task_id if error is not None else None,
        reason=record.reason,
        cancelled_by=record.cancelled_by,
        paused_by=record.paused_by,
        wake_at=_datetime(record.wake_at) if parked else None,
        delay_id=delays[0] if delays else None,
        signal_id=signal_id,
        signal_name=signals[signal_id] if signal_id is not None else None,
        created_at=_datetime(record.created_at),
        updated_at=_datetime(record.updated_at),
        error_detail=error,
        definition_hash=record.definition_hash,
    )


def error_for(error: ErrorInfo, instance_id: str) -> WorkflowError:
    """The typed exception for a failure, naming the instance and the task.

    Its text is ``ValueError: card declined (task 'charge' of instance 'o-1')``, then the
    task's traceback after a blank line when the task raised (as Sayiir 1.0's).
    """
    where = f"instance {instance_id!r}"
    if error.task_id is not None:
        where = f"task {error.task_id!r} of {where}"
    message = f"{error} ({where})"
    if error.traceback:
        message = f"{message}\n\n{error.traceback}"
    if error.kind == "signal_timeout":
        return SignalTimeoutError(message)
    error_class: type[TaskError] = TaskError
    if error.kind == "timeout":
        error_class = TaskTimeoutError
    elif error.kind == "serialization":
        error_class = SerializationError
    return error_class(
        message, instance_id=instance_id, task_id=error.task_id, error_type=error.error_type
    )


def result_or_raise(status: WorkflowStatus) -> Any:
    """A finished instance's output, or the typed error explaining why there is none.

    A failure raises its ``TaskError`` (or subclass), a cancel ``InstanceCancelledError``;
    an instance that has not finished raises ``InvalidStateError``.
    """
    instance = status.instance_id or "?"
    if status.is_completed():
        return status.output
    if status.is_failed():
        if status.error_detail is not None:
            raise error_for(status.error_detail, instance)
        raise WorkflowError(f"instance {instance!r} failed: {status.error}")
    if status.is_cancelled():
        by = f" by {status.cancelled_by!r}" if status.cancelled_by else ""
        why = f": {status.reason}" if status.reason else ""
        raise InstanceCancelledError(
            f"instance {instance!r} was cancelled{by}{why}",
            reason=status.reason,
            cancelled_by=status.cancelled_by,
        )
    raise InvalidStateError(
        f"instance {instance!r} did not complete (status {status.status}); "
        "use run_durable_workflow() to inspect it and resume_workflow() to continue"
    )


def _datetime(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None
