"""The ``Backend`` operations as synchronous ORM work, each one transaction: create, reads,
claims and commits (control requests, signals, listing and resets are in ``_control``).

``DjangoBackend`` runs these off the event loop. Each loads what it needs inside its
transaction (locking the instance row on PostgreSQL), asks ``sayiir_core.backends.rules``
for the new record and history entries, and writes both back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import IntegrityError
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce

from sayiir_core.backends.base import (
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstanceRecord,
    LoadedInstance,
    NewInstance,
    StepWrite,
)
from sayiir_core.backends.rows import RECORD_COLUMNS, record_from_values
from sayiir_core.backends.rules import (
    committed_record,
    is_claimable,
    missing,
    new_record,
    terminated_record,
)
from sayiir_core.backends.step_queue import StepTicket
from sayiir_core.errors import InstanceAlreadyExistsError, LeaseLostError
from sayiir_core.status import Status
from sayiir_django import _postgres as postgres
from sayiir_django._records import (
    ROW_COLUMNS,
    changed_columns,
    created_timestamp,
    event_columns,
    latest_step,
    record_columns,
)
from sayiir_django._transactions import Database, Done
from sayiir_django._wakeups import announce_finish, announce_work, wake_in_process
from sayiir_django.models import (
    Checkpoint,
    HistoryEntry,
    PendingSignal,
    SharedStep,
    WorkflowInstance,
)

_READY = [Status.PENDING.value, Status.RUNNING.value]
_PARKED = [Status.WAITING.value, Status.AWAITING_SIGNAL.value]
_UNFINISHED = [status.value for status in Status if not status.is_terminal]
FINISHED = [status.value for status in Status if status.is_terminal]
# A create races with inserts and deletes of the same id at most this often.
_CREATE_ROUNDS = 5


def instances(db: Database) -> QuerySet[WorkflowInstance]:
    return WorkflowInstance.objects.using(db.alias)


def locked(db: Database, qs: QuerySet[Any], *, skip_locked: bool = False) -> QuerySet[Any]:
    """``qs`` with its rows locked on PostgreSQL; SQLite's write lock covers the database."""
    if db.vendor == "postgresql":
        return qs.select_for_update(skip_locked=skip_locked, of=("self",))
    return qs


def _row(db: Database, instance_id: str) -> dict[str, Any] | None:
    qs = locked(db, instances(db).filter(instance_id=instance_id))
    return qs.values(*ROW_COLUMNS).first()


def require(db: Database, instance_id: str) -> dict[str, Any]:
    row = _row(db, instance_id)
    if row is None:
        raise missing(instance_id)
    return row


def check_tables(db: Database) -> None:
    def body() -> None:
        instances(db).exists()

    # No transaction: on SQLite an IMMEDIATE one would wait for any writer's lock.
    db.run("open", body, atomic=False)


# -- writing records and history ------------------------------------------------------


def append_history(
    db: Database, instance_id: str, last_seq: int, events: Sequence[HistoryEvent]
) -> int:
    """Insert ``events`` after history entry ``last_seq``; returns the new last seq."""
    if events:
        HistoryEntry.objects.using(db.alias).bulk_create(
            [
                HistoryEntry(**event_columns(instance_id, last_seq + n, event))
                for n, event in enumerate(events, 1)
            ]
        )
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
        instances(db).filter(pk=row["id"]).update(**fields)


def _insert(db: Database, record: InstanceRecord, history_seq: int) -> WorkflowInstance:
    return instances(db).create(
        **record_columns(record),
        created=created_timestamp(record.created_at),
        history_seq=history_seq,
    )


# -- create and reads -----------------------------------------------------------------


def create(db: Database, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
    def body() -> tuple[InstanceRecord, bool]:
        row = _row(db, new.instance_id)
        if row is None:
            record, started = new_record(new)
            # The history of an id outlives its instance (terminate_existing keeps it),
            # so a fresh instance still numbers its entries after any left over.
            last = _last_history_seq(db, new.instance_id)
            _insert(db, record, append_history(db, new.instance_id, last, [started]))
        else:
            existing = record_from_values(row)
            if policy is ConflictPolicy.USE_EXISTING:
                return existing, False
            if policy is ConflictPolicy.FAIL:
                raise InstanceAlreadyExistsError(
                    f"workflow instance {new.instance_id!r} already exists "
                    f"(status {existing.status})"
                )
            record, started = new_record(new, replaces=existing)
            # Delete and insert rather than update: the new row gets a new id, so it
            # lists as the newest instance, like any other fresh submission; its
            # checkpoints, signals and shared steps go with the old row.
            instances(db).filter(pk=row["id"]).delete()
            events = [terminated_record(new.now), started]
            _insert(db, record, append_history(db, new.instance_id, row["history_seq"], events))
        if record.status is Status.PENDING:
            announce_work(db.alias)
        return record, True

    def resolve() -> Done[tuple[InstanceRecord, bool]] | None:
        # Ours if the stored instance carries this submission's identity and time.
        stored = get_record(db, new.instance_id)
        if stored is not None and (
            stored.workflow_id,
            stored.definition_hash,
            stored.input,
            stored.created_at,
        ) == (new.workflow_id, new.definition_hash, new.input, new.now):
            return Done((stored, True))
        return None

    def insert_fresh() -> tuple[InstanceRecord, bool] | None:
        record, started = new_record(new)
        if not postgres.insert_new(db.alias, record, started):
            return None  # the id exists: the ORM's path applies the conflict policy
        if record.status is Status.PENDING:
            wake_in_process(db.alias, work=True)
        return record, True

    def resolve_fresh() -> Done[tuple[InstanceRecord, bool] | None] | None:
        found = resolve()
        return None if found is None else Done(found.value)

    for _ in range(_CREATE_ROUNDS - 1):
        try:
            if db.vendor == "postgresql":
                # A new id, the common case, in one statement (see _postgres).
                inserted = db.run("create", insert_fresh, resolve=resolve_fresh, single_write=True)
                if inserted is not None:
                    return inserted
            return db.run("create", body, resolve=resolve)
        except IntegrityError:
            # Another transaction inserted the same id between our read and our insert;
            # the next round finds it and applies the conflict policy.
            continue
    return db.run("create", body, resolve=resolve)


def _last_history_seq(db: Database, instance_id: str) -> int:
    last = (
        HistoryEntry.objects.using(db.alias)
        .filter(instance_id=instance_id)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return last or 0


def load(db: Database, instance_id: str) -> LoadedInstance | None:
    # One statement, so one snapshot of the record and its checkpoints, without a
    # transaction (on SQLite an IMMEDIATE one would take the write lock to read).
    rows = (
        instances(db)
        .filter(instance_id=instance_id)
        .order_by("checkpoints__id")
        .values(*RECORD_COLUMNS, "checkpoints__step_key", "checkpoints__payload")
    )

    def body() -> LoadedInstance | None:
        found = list(rows)
        if not found:
            return None
        checkpoints = {
            row["checkpoints__step_key"]: bytes(row["checkpoints__payload"])
            for row in found
            if row["checkpoints__step_key"] is not None
        }
        return LoadedInstance(record_from_values(found[0]), checkpoints)

    return db.run("load", body, atomic=False)


def get_record(db: Database, instance_id: str) -> InstanceRecord | None:
    def body() -> InstanceRecord | None:
        row = instances(db).filter(instance_id=instance_id).values(*RECORD_COLUMNS).first()
        return None if row is None else record_from_values(row)

    return db.run("get_record", body, atomic=False)


def get_checkpoint(db: Database, instance_id: str, key: str) -> bytes | None:
    def body() -> bytes | None:
        payload = (
            Checkpoint.objects.using(db.alias)
            .filter(instance__instance_id=instance_id, step_key=key)
            .values_list("payload", flat=True)
            .first()
        )
        return None if payload is None else bytes(payload)

    return db.run("get_checkpoint", body, atomic=False)


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


# -- claims ---------------------------------------------------------------------------


def claim(db: Database, instance_id: str, owner: str, lease_until: float) -> Claim:
    def body() -> Claim:
        row = require(db, instance_id)
        record = dataclasses.replace(
            record_from_values(row),
            owner=owner,
            claim_token=row["claim_token"] + 1,
            lease_until=lease_until,
        )
        instances(db).filter(pk=row["id"]).update(
            owner=owner, claim_token=record.claim_token, lease_until=lease_until
        )
        checkpoints = checkpoints_of(db, [row["id"]])[row["id"]]
        return Claim(LoadedInstance(record, checkpoints), record.claim_token)

    # Claiming again is harmless once a lost attempt is settled: the token goes up once
    # more and the newest one is ours.
    return db.run("claim", body, resolve=lambda: None)


def claimable(now: float) -> Q:
    """``rules.is_claimable`` as a filter, so LIMIT counts only rows that can be taken."""
    return (
        Q(status__in=_UNFINISHED)
        & (Q(owner__isnull=True) | Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        & (
            Q(control_request__isnull=False)
            | Q(status__in=_READY)
            | Q(status__in=_PARKED, wake_at__isnull=False, wake_at__lte=now)
        )
    )


def definitions_filter(workflows: Mapping[str, str]) -> Q:
    match = Q()
    for workflow_id, definition_hash in workflows.items():
        match |= Q(workflow_id=workflow_id, definition_hash=definition_hash)
    return match


def claim_next(
    db: Database,
    owner: str,
    workflows: Mapping[str, str],
    now: float,
    lease_until: float,
    limit: int,
) -> list[Claim]:
    candidates = (
        instances(db)
        .filter(definitions_filter(workflows), claimable(now))
        .order_by("priority", Coalesce("wake_at", Value(0.0)), "created_at", "id")
    )

    def body() -> list[Claim]:
        rows = list(locked(db, candidates, skip_locked=True).values(*ROW_COLUMNS)[:limit])
        taken = [
            (row["id"], record)
            for row in rows
            if is_claimable(record := record_from_values(row), now)
        ]
        if not taken:
            return []
        instances(db).filter(pk__in=[row_id for row_id, _ in taken]).update(
            owner=owner, claim_token=F("claim_token") + 1, lease_until=lease_until
        )
        checkpoints = checkpoints_of(db, [row_id for row_id, _ in taken])
        return [
            _claim_of(record, owner, lease_until, checkpoints[row_id]) for row_id, record in taken
        ]

    def resolve() -> Done[list[Claim]] | None:
        # Claims carry our owner id and this call's exact lease: find any we took, so
        # they run now instead of sitting out a whole lease unclaimed.
        rows = list(instances(db).filter(owner=owner, lease_until=lease_until).values(*ROW_COLUMNS))
        mine = [row for row in rows if workflows.get(row["workflow_id"]) == row["definition_hash"]]
        if not mine:
            return None
        checkpoints = checkpoints_of(db, [row["id"] for row in mine])
        return Done(
            [
                Claim(
                    LoadedInstance(record_from_values(row), checkpoints[row["id"]]),
                    row["claim_token"],
                )
                for row in mine
            ]
        )

    if not _any_claimable(db, candidates):
        return []
    return db.run("claim_next", body, resolve=resolve)


def _any_claimable(db: Database, candidates: QuerySet[WorkflowInstance]) -> bool:
    """Idle workers poll often: look first without locking anything.

    On SQLite this keeps an empty poll from queueing behind a committing worker for the
    write lock; the claim itself runs the query again under the lock.
    """
    if db.in_callers_transaction():
        return True
    return db.run("claim_next", candidates.exists, atomic=False)


def _claim_of(
    record: InstanceRecord, owner: str, lease_until: float, checkpoints: dict[str, bytes]
) -> Claim:
    token = record.claim_token + 1
    taken = dataclasses.replace(record, owner=owner, claim_token=token, lease_until=lease_until)
    return Claim(LoadedInstance(taken, checkpoints), token)


def renew(db: Database, instance_id: str, token: int, lease_until: float) -> bool:
    def body() -> bool:
        updated = (
            instances(db)
            .filter(instance_id=instance_id, claim_token=token, owner__isnull=False)
            .update(lease_until=lease_until)
        )
        return updated == 1

    # Setting the same lease twice is the same as once.
    return db.run("renew", body, resolve=lambda: None)


# -- commit ---------------------------------------------------------------------------


class _DuplicateCheckpointError(Exception):
    """Raised out of the commit transaction, so nothing of the refused step is kept."""


def commit(
    db: Database,
    instance_id: str,
    token: int,
    write: StepWrite,
    commit_id: int,
    tickets: Sequence[StepTicket] = (),
) -> ControlRequest | None:
    """Apply ``write`` under claim ``token``.

    ``tickets`` (steps of this instance, see ``_advance``) are queued by the same
    statement; only on PostgreSQL, whose path is one statement.
    """
    if tickets and db.vendor != "postgresql":
        raise ValueError("internal error: tickets go with a commit only on PostgreSQL")
    keys = [key for key, _ in write.checkpoints]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise LeaseLostError(f"instance {instance_id!r}: step {key!r} is already checkpointed")

    def body() -> ControlRequest | None:
        row = require(db, instance_id)
        if row["claim_token"] != token or row["owner"] is None:
            raise _lease_lost(instance_id, token, row["claim_token"])
        if write.checkpoints:
            try:
                Checkpoint.objects.using(db.alias).bulk_create(
                    [
                        Checkpoint(instance_id=row["id"], step_key=key, payload=payload)
                        for key, payload in write.checkpoints
                    ]
                )
            except IntegrityError as exc:
                raise _DuplicateCheckpointError from exc
        before = record_from_values(row)
        after = committed_record(before, write)
        save(db, row, before, after, write.events, last_commit=commit_id)
        if write.consumed_signal is not None:
            PendingSignal.objects.using(db.alias).filter(
                pk=write.consumed_signal, instance_id=row["id"]
            ).delete()
        # A checkpoint replaces its step's queue rows; a finished instance needs none.
        shared = SharedStep.objects.using(db.alias).filter(instance_id=row["id"])
        if row["has_shared_steps"] and after.status.is_terminal:
            shared.delete()
        elif row["has_shared_steps"] and keys:
            shared.filter(step_key__in=keys).delete()
        if after.status.is_terminal:
            announce_finish(db.alias, instance_id)
        return after.control_request

    def statement() -> ControlRequest | None:
        try:
            outcome = postgres.commit(db.alias, instance_id, token, write, commit_id, tickets)
        except IntegrityError as exc:
            if postgres.CHECKPOINT_CONSTRAINT not in str(exc):
                raise
            raise _DuplicateCheckpointError from exc
        if outcome is None:
            row = instances(db).filter(instance_id=instance_id).values("claim_token").first()
            if row is None:
                raise missing(instance_id)
            raise _lease_lost(instance_id, token, row["claim_token"])
        finished = instance_id if outcome.finished else None
        work = outcome.runnable_and_free or bool(tickets)
        wake_in_process(db.alias, work=work, finished=finished)
        return outcome.control_request

    def resolve() -> Done[ControlRequest | None] | None:
        return resolve_commit(db, instance_id, token, commit_id)

    try:
        if db.vendor == "postgresql":
            # One statement, one round trip (see _postgres).
            return db.run("commit", statement, resolve=resolve, single_write=True)
        return db.run("commit", body, resolve=resolve)
    except _DuplicateCheckpointError:
        taken = (
            Checkpoint.objects.using(db.alias)
            .filter(instance__instance_id=instance_id, step_key__in=keys)
            .values_list("step_key", flat=True)
            .first()
        )
        raise LeaseLostError(
            f"instance {instance_id!r}: step {taken or keys[0]!r} is already checkpointed"
        ) from None


def resolve_commit(
    db: Database, instance_id: str, token: int, commit_id: int
) -> Done[ControlRequest | None] | None:
    """After a connection lost while committing: was commit ``commit_id`` applied?"""
    row = instances(db).filter(instance_id=instance_id).values(*ROW_COLUMNS, "last_commit").first()
    if row is None:
        raise missing(instance_id)
    if row["last_commit"] == commit_id:
        return Done(record_from_values(row).control_request)
    if row["claim_token"] != token or row["owner"] is None:
        raise _lease_lost(instance_id, token, row["claim_token"])
    return None  # not applied, and the claim is still ours: send it again


def _lease_lost(instance_id: str, token: int, current: int) -> LeaseLostError:
    return LeaseLostError(
        f"instance {instance_id!r}: claim {token} was taken over (current claim {current}); "
        "write refused"
    )
