"""A step's commit: checkpoints, history and the new record under the claim's fence.

On PostgreSQL it is one statement (``_postgres``); elsewhere one transaction that reads
the row, checks the fence, and writes through ``_instance_rows``. Either way a duplicate
checkpoint refuses the whole write, and a connection lost while committing is resolved
by the commit's id (``last_commit``): applied, or sent again while the claim holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError

from sayiir_core.backends.base import ControlRequest, StepWrite
from sayiir_core.backends.rows import record_from_values
from sayiir_core.backends.rules import committed_record, missing
from sayiir_core.backends.step_queue import StepTicket
from sayiir_core.errors import LeaseLostError
from sayiir_django import _postgres as postgres
from sayiir_django._instance_rows import (
    insert_checkpoints,
    instances,
    lease_lost,
    require,
    save,
)
from sayiir_django._records import ROW_COLUMNS
from sayiir_django._transactions import Database, Done
from sayiir_django._wakeups import announce_finish, wake_in_process
from sayiir_django.models import Checkpoint, PendingSignal, SharedStep


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
            raise lease_lost(instance_id, token, row["claim_token"])
        if write.checkpoints:
            try:
                insert_checkpoints(db, row["id"], write.checkpoints)
            except IntegrityError as exc:
                raise _DuplicateCheckpointError from exc
        before = record_from_values(row)
        after = committed_record(before, write)
        save(db, row, before, after, write.events, last_commit=commit_id)
        if write.consumed_signal is not None:
            PendingSignal.objects.using(db.alias).filter(
                pk=write.consumed_signal, instance_id=row["id"]
            ).delete()
        if row["has_shared_steps"] and (after.status.is_terminal or keys):
            # A checkpoint replaces its step's queue rows; a finished instance needs none.
            shared = SharedStep.objects.using(db.alias).filter(instance_id=row["id"])
            if not after.status.is_terminal:
                shared = shared.filter(step_key__in=keys)
            shared.delete()
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
            raise lease_lost(instance_id, token, row["claim_token"])
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
        raise lease_lost(instance_id, token, row["claim_token"])
    return None  # not applied, and the claim is still ours: send it again
