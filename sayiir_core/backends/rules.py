"""Record transitions shared by every backend, so they all behave the same.

A backend loads a record inside its transaction, asks one of these pure functions for
the new record and the history events to append, and writes both back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sayiir_core.backends.base import (
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstanceRecord,
    NewInstance,
    StepWrite,
)
from sayiir_core.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidStateError,
    SignalBufferFullError,
)
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.status import Status
from sayiir_core.telemetry.propagation import TRACE_CONTEXT_KEY

# Statuses a worker picks up as soon as the lease is free; parked ones wait for wake_at.
_READY = frozenset({Status.PENDING, Status.RUNNING})
_PARKED = frozenset({Status.WAITING, Status.AWAITING_SIGNAL})


def missing(instance_id: str) -> InstanceNotFoundError:
    return InstanceNotFoundError(f"no workflow instance {instance_id!r}")


def new_record(
    new: NewInstance, replaces: InstanceRecord | None = None
) -> tuple[InstanceRecord, HistoryEvent]:
    """The record for ``new``; ``replaces`` is the instance ``terminate_existing`` drops.

    A replacement continues the old claim token instead of restarting at 0, so a worker
    still holding a claim on the old instance can never match a claim on the new one.
    """
    previous_token = replaces.claim_token if replaces is not None else 0
    record = InstanceRecord(
        instance_id=new.instance_id,
        workflow_id=new.workflow_id,
        definition_hash=new.definition_hash,
        status=new.status,
        input=new.input,
        created_at=new.now,
        updated_at=new.now,
        wake_at=new.now,
        owner=new.owner,
        claim_token=previous_token + (1 if new.owner is not None else 0),
        lease_until=new.lease_until,
        priority=new.priority,
    )
    # The submitter's trace context rides in the event, so no backend needs a column.
    detail = {TRACE_CONTEXT_KEY: dict(new.trace_context)} if new.trace_context else None
    event = HistoryEvent("started", new.now, worker_id=new.owner, detail=detail)
    return record, event


def keeps_existing(existing: InstanceRecord, policy: ConflictPolicy) -> bool:
    """What a ``create`` does about an instance already stored under its id: keep it
    (``use_existing``: True), refuse (``fail``: ``InstanceAlreadyExistsError``), or
    replace it (``terminate_existing``: False)."""
    if policy is ConflictPolicy.USE_EXISTING:
        return True
    if policy is ConflictPolicy.FAIL:
        raise InstanceAlreadyExistsError(
            f"workflow instance {existing.instance_id!r} already exists (status {existing.status})"
        )
    return False


def is_submission_of(stored: InstanceRecord, new: NewInstance) -> bool:
    """Whether ``stored`` is what ``new`` wrote: its identity, input and creation time
    (how a ``create`` whose reply was lost finds out that it went through)."""
    return (
        stored.workflow_id,
        stored.definition_hash,
        stored.input,
        stored.created_at,
    ) == (new.workflow_id, new.definition_hash, new.input, new.now)


def terminated_record(now: float) -> HistoryEvent:
    """History entry left when ``terminate_existing`` replaces an instance."""
    return HistoryEvent("cancelled", now, detail={"reason": "replaced (terminate_existing)"})


def has_live_claim(record: InstanceRecord, now: float) -> bool:
    return record.owner is not None and (record.lease_until or 0.0) > now


def is_claimable(record: InstanceRecord, now: float) -> bool:
    if has_live_claim(record, now) or record.status.is_terminal:
        return False
    if record.control_request is not None or record.status in _READY:
        return True
    return record.status in _PARKED and record.wake_at is not None and record.wake_at <= now


def settled_status(status: Status, pending_request: ControlRequest | None) -> Status:
    """The status a commit stores, given the control request pending before it.

    A runner settles a pause only after its running steps have checkpointed. If the
    pause was withdrawn (unpaused) meanwhile, the instance becomes runnable instead.
    """
    if status is Status.PAUSED and pending_request is not ControlRequest.PAUSE:
        return Status.PENDING
    return status


def committed_record(record: InstanceRecord, write: StepWrite) -> InstanceRecord:
    settled = write.status.is_terminal or write.status is Status.PAUSED
    released = write.release or write.status.is_terminal
    # Every field spelled out: dataclasses.replace costs more than the rest of an
    # in-memory commit. _RECORD_FIELDS below fails the import when a field is added.
    return InstanceRecord(
        instance_id=record.instance_id,
        workflow_id=record.workflow_id,
        definition_hash=write.definition_hash or record.definition_hash,
        status=settled_status(write.status, record.control_request),
        input=record.input,
        created_at=record.created_at,
        updated_at=write.now,
        output=write.output,
        error=write.error,
        control=dict(write.control),
        wake_at=write.wake_at,
        reason=record.reason,
        cancelled_by=record.cancelled_by,
        paused_by=record.paused_by,
        control_request=None if settled else record.control_request,
        owner=None if released else record.owner,
        claim_token=record.claim_token,
        lease_until=None if released else record.lease_until,
        priority=write.priority if write.priority is not None else record.priority,
    )


def apply_control_request(
    record: InstanceRecord,
    request: ControlRequest,
    reason: str | None,
    by: str | None,
    now: float,
) -> tuple[InstanceRecord, list[HistoryEvent]]:
    """Cancel or pause now if nobody is running the instance, else leave a request."""
    verb = "cancel" if request is ControlRequest.CANCEL else "pause"
    if record.status.is_terminal:
        raise InvalidStateError(
            f"cannot {verb} workflow instance {record.instance_id!r}: it is already {record.status}"
        )
    if request is ControlRequest.PAUSE and record.status is Status.PAUSED:
        return record, []
    if request is ControlRequest.PAUSE and record.control_request is ControlRequest.CANCEL:
        return record, []
    cancelling = request is ControlRequest.CANCEL
    requested = dataclasses.replace(
        record,
        reason=reason,
        cancelled_by=by if cancelling else record.cancelled_by,
        paused_by=record.paused_by if cancelling else by,
    )
    if has_live_claim(record, now):
        return dataclasses.replace(requested, control_request=request), []
    status = Status.CANCELLED if cancelling else Status.PAUSED
    updated = dataclasses.replace(
        requested,
        status=status,
        control_request=None,
        owner=None,
        lease_until=None,
        wake_at=None,
        updated_at=now,
    )
    detail = {"reason": reason, "by": by}
    return updated, [
        HistoryEvent("cancelled" if status is Status.CANCELLED else "paused", now, detail=detail)
    ]


def apply_unpause(record: InstanceRecord, now: float) -> tuple[InstanceRecord, list[HistoryEvent]]:
    if record.status is Status.PAUSED:
        updated = dataclasses.replace(
            record,
            status=Status.PENDING,
            wake_at=now,
            paused_by=None,
            reason=None,
            control_request=None,
            updated_at=now,
        )
        return updated, [HistoryEvent("unpaused", now)]
    if record.control_request is ControlRequest.PAUSE:
        updated = dataclasses.replace(record, control_request=None, paused_by=None, reason=None)
        return updated, [HistoryEvent("unpaused", now)]
    raise InvalidStateError(
        f"cannot unpause workflow instance {record.instance_id!r}: it is "
        f"{record.status.reported}, not paused"
    )


def check_signal_target(record: InstanceRecord, name: str) -> None:
    if record.status.is_terminal:
        raise InvalidStateError(
            f"signal {name!r} not sent: workflow instance {record.instance_id!r} is already "
            f"{record.status}"
        )


# At most this many unconsumed signals wait per instance; the next send is refused.
# A workflow consumes its signals one ``wait_for_signal`` at a time, so more than this
# is a sender looping, or signals under a name nothing reads: refused, not piled up.
MAX_BUFFERED_SIGNALS = 1_000


def check_signal_room(record: InstanceRecord, name: str, buffered: int) -> None:
    """Refuse a signal when ``buffered`` (the instance's unconsumed signals) is at the bound.

    A signal the instance is parked waiting for is always taken (``signal_wakes``): it is
    consumed at once, and a buffer filled with other names must not lock the instance
    out of the one signal that moves it on. Backends call this inside the transaction
    that would insert the signal, with the instance locked, so concurrent sends cannot
    overshoot and nothing is stored.
    """
    if buffered >= MAX_BUFFERED_SIGNALS and not signal_wakes(record, name):
        raise signal_buffer_full(record.instance_id, name)


def signal_buffer_full(instance_id: str, name: str) -> SignalBufferFullError:
    return SignalBufferFullError(
        f"signal {name!r} not sent: workflow instance {instance_id!r} already buffers "
        f"{MAX_BUFFERED_SIGNALS} unconsumed signals (the most it may); they are consumed "
        "by its wait_for_signal steps",
        instance_id=instance_id,
        signal_name=name,
        limit=MAX_BUFFERED_SIGNALS,
    )


def signal_wakes(record: InstanceRecord, name: str) -> bool:
    """Whether a signal called ``name`` should wake the instance now.

    Only one it is parked waiting for: a signal under any other name is buffered for a
    later ``wait_for_signal`` and must not send a worker to claim an instance that would
    only park again. ``control["signals"]`` maps each awaited signal's step to its name.
    """
    if record.status is not Status.AWAITING_SIGNAL:
        return False
    awaited = record.control.get("signals", {})
    return name in awaited.values()


def apply_reset(
    record: InstanceRecord, checkpoint_keys: Sequence[str], task_id: str, now: float
) -> tuple[InstanceRecord, int, HistoryEvent]:
    """Reset for ``retry_from``; returns the record and how many leading checkpoints stay."""
    if has_live_claim(record, now) and record.status in _READY:
        raise InvalidStateError(
            f"cannot retry workflow instance {record.instance_id!r} from {task_id!r} while it "
            "is running; pause or cancel it first"
        )
    keep = next(
        (i for i, key in enumerate(checkpoint_keys) if task_id_of_key(key) == task_id), None
    )
    if keep is None:
        failed_here = (
            record.error is not None
            and record.error.task_id is not None
            and (task_id_of_key(record.error.task_id) == task_id)
        )
        if not failed_here:
            raise InvalidStateError(
                f"cannot retry workflow instance {record.instance_id!r} from {task_id!r}: "
                "that step has no checkpoint and is not the step that failed"
            )
        keep = len(checkpoint_keys)
    updated = dataclasses.replace(
        record,
        status=Status.PENDING,
        output=None,
        error=None,
        control={},
        wake_at=now,
        reason=None,
        cancelled_by=None,
        paused_by=None,
        control_request=None,
        owner=None,
        lease_until=None,
        updated_at=now,
    )
    dropped = list(checkpoint_keys[keep:])
    event = HistoryEvent("retried_from", now, step_key=task_id, detail={"dropped": dropped})
    return updated, keep, event


def encode_cursor(position: int) -> str:
    return str(position)


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"invalid list cursor {cursor!r}") from None
