"""The ``Backend`` operations that steer and read instances: cancel/pause, signals,
listing, history and ``reset_from``, as synchronous ORM work, each one transaction."""

from __future__ import annotations

import dataclasses

from sayiir_core.backends.base import (
    BufferedSignal,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
)
from sayiir_core.backends.rows import RECORD_COLUMNS, record_from_values
from sayiir_core.backends.rules import (
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_room,
    check_signal_target,
    decode_cursor,
    encode_cursor,
    missing,
    signal_wakes,
)
from sayiir_core.status import Status
from sayiir_django._instance_rows import instances, require, save
from sayiir_django._records import event_from_row
from sayiir_django._transactions import Database
from sayiir_django._wakeups import announce_finish, announce_work
from sayiir_django.models import Checkpoint, HistoryEntry, PendingSignal, SharedStep

# -- control and signals ----------------------------------------------------------------


def request_control(
    db: Database,
    instance_id: str,
    request: ControlRequest,
    reason: str | None,
    by: str | None,
    now: float,
) -> InstanceRecord:
    def body() -> InstanceRecord:
        row = require(db, instance_id)
        before = record_from_values(row)
        after, events = apply_control_request(before, request, reason, by, now)
        save(db, row, before, after, events)
        if after.status.is_terminal:  # cancelled at once: nobody will checkpoint
            SharedStep.objects.using(db.alias).filter(instance_id=row["id"]).delete()
            announce_finish(db.alias, instance_id)
        return after

    return db.run(str(request), body)


def unpause(db: Database, instance_id: str, now: float) -> InstanceRecord:
    def body() -> InstanceRecord:
        row = require(db, instance_id)
        before = record_from_values(row)
        after, events = apply_unpause(before, now)
        save(db, row, before, after, events)
        if after.status is Status.PENDING:
            announce_work(db.alias)
        return after

    return db.run("unpause", body)


def send_signal(db: Database, instance_id: str, name: str, payload: bytes, now: float) -> None:
    def body() -> None:
        row = require(db, instance_id)
        before = record_from_values(row)
        check_signal_target(before, name)
        # The row is locked (PostgreSQL) or the database is (SQLite), and this count
        # is a statement of its own, so concurrent senders cannot overshoot the bound.
        buffered = PendingSignal.objects.using(db.alias).filter(instance_id=row["id"]).count()
        check_signal_room(before, name, buffered)
        PendingSignal.objects.using(db.alias).create(
            instance_id=row["id"], name=name, payload=payload, sent_at=now
        )
        # Only a signal it is parked waiting for wakes it; others wait in the buffer.
        awaiting = signal_wakes(before, name)
        after = dataclasses.replace(before, wake_at=now) if awaiting else before
        event = HistoryEvent("signal_sent", now, detail={"name": name})
        save(db, row, before, after, [event])
        if awaiting:
            announce_work(db.alias)

    db.run("send_signal", body)


def next_signal(db: Database, instance_id: str, name: str) -> BufferedSignal | None:
    def body() -> BufferedSignal | None:
        row = (
            PendingSignal.objects.using(db.alias)
            .filter(instance__instance_id=instance_id, name=name)
            .order_by("id")
            .values_list("id", "name", "payload")
            .first()
        )
        return None if row is None else BufferedSignal(row[0], row[1], bytes(row[2]))

    return db.run("next_signal", body, atomic=False)


# -- listing, history, reset ----------------------------------------------------------


def list_instances(
    db: Database,
    status: Status | None,
    workflow_id: str | None,
    limit: int,
    cursor: str | None,
) -> InstancePage:
    after = decode_cursor(cursor)
    qs = instances(db).order_by("-id")
    if status is not None:
        qs = qs.filter(status=Status(status).value)
    if workflow_id is not None:
        qs = qs.filter(workflow_id=workflow_id)
    if after is not None:
        qs = qs.filter(id__lt=after)

    def body() -> InstancePage:
        # One row more than asked tells whether another page exists.
        rows = list(qs.values("id", *RECORD_COLUMNS)[: limit + 1])
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
        return InstancePage([record_from_values(row) for row in page], next_cursor)

    return db.run("list_instances", body, atomic=False)


def history(db: Database, instance_id: str) -> list[HistoryEvent]:
    def body() -> list[HistoryEvent]:
        rows = list(
            HistoryEntry.objects.using(db.alias)
            .filter(instance_id=instance_id)
            .order_by("seq")
            .values("kind", "at", "step_key", "attempt", "worker_id", "detail", "seq")
        )
        # Every instance has a "started" entry, so no rows usually means no instance.
        if not rows and not instances(db).filter(instance_id=instance_id).exists():
            raise missing(instance_id)
        return [event_from_row(row) for row in rows]

    return db.run("history", body, atomic=False)


def reset_from(db: Database, instance_id: str, task_id: str, now: float) -> InstanceRecord:
    def body() -> InstanceRecord:
        row = require(db, instance_id)
        written = list(
            Checkpoint.objects.using(db.alias)
            .filter(instance_id=row["id"])
            .order_by("id")
            .values_list("id", "step_key")
        )
        before = record_from_values(row)
        after, keep, event = apply_reset(before, [key for _, key in written], task_id, now)
        if keep < len(written):
            Checkpoint.objects.using(db.alias).filter(
                instance_id=row["id"], id__gte=written[keep][0]
            ).delete()
        SharedStep.objects.using(db.alias).filter(instance_id=row["id"]).delete()
        save(db, row, before, after, [event])
        announce_work(db.alias)
        return after

    return db.run("retry_from", body)
