"""``AdvanceQueue`` (``sayiir_core.backends.step_queue``) as ORM work, one transaction each.

``claim_if_free`` reads the instance row locked (``SELECT ... FOR UPDATE`` on
PostgreSQL, which waits for a write in progress and then reads the row as it left it;
SQLite's write lock covers the whole database) and claims it only if that takes it
from nobody: the check and the claim are in one transaction, so no other claim can
come in between.

``commit_and_publish`` on PostgreSQL is the commit's one statement with one more part,
which queues the tickets only if the fence held (``_postgres``). Elsewhere it runs the
ordinary commit and the ordinary publish inside one transaction: a refused commit
raises out of it, so its tickets are never queued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from sayiir_core.backends._free import is_free_for
from sayiir_core.backends.base import (
    Claim,
    ControlRequest,
    InstanceRecord,
    LoadedInstance,
    StepWrite,
)
from sayiir_core.backends.rows import record_from_values
from sayiir_core.backends.step_queue import StepTicket
from sayiir_django import _operations as ops
from sayiir_django import _step_queue as steps
from sayiir_django._records import ROW_COLUMNS
from sayiir_django._transactions import Database, Done


def claim_if_free(
    db: Database,
    instance_id: str,
    owner: str,
    definitions: Mapping[str, str],
    now: float,
    lease_until: float,
) -> Claim | None:
    def body() -> Claim | None:
        # Not skip_locked: a row being written is waited for, then judged as written.
        row = ops.locked(db, ops.instances(db).filter(instance_id=instance_id))
        found = row.values(*ROW_COLUMNS).first()
        if found is None:
            return None
        record = record_from_values(found)
        if not is_free_for(record, definitions, now):
            return None
        taken = dataclasses.replace(
            record, owner=owner, claim_token=record.claim_token + 1, lease_until=lease_until
        )
        ops.instances(db).filter(pk=found["id"]).update(
            owner=owner, claim_token=taken.claim_token, lease_until=lease_until
        )
        return _claim(db, found["id"], taken)

    def resolve() -> Done[Claim | None] | None:
        # Ours if the row carries our owner id and this call's exact lease.
        found = (
            ops.instances(db)
            .filter(instance_id=instance_id, owner=owner, lease_until=lease_until)
            .exclude(status__in=ops.FINISHED)
            .values(*ROW_COLUMNS)
            .first()
        )
        if found is None:
            return None  # not applied: claim again
        return Done(_claim(db, found["id"], record_from_values(found)))

    return db.run("claim_if_free", body, resolve=resolve)


def _claim(db: Database, row_id: int, record: InstanceRecord) -> Claim:
    checkpoints = ops.checkpoints_of(db, [row_id])[row_id]
    return Claim(LoadedInstance(record, checkpoints), record.claim_token)


def commit_and_publish(
    db: Database,
    instance_id: str,
    token: int,
    write: StepWrite,
    tickets: Sequence[StepTicket],
    commit_id: int,
) -> ControlRequest | None:
    if db.vendor == "postgresql" and all(t.ref.instance_id == instance_id for t in tickets):
        # One statement: the commit's, with a part that queues the tickets (_postgres).
        return ops.commit(db, instance_id, token, write, commit_id, tickets)

    def body() -> ControlRequest | None:
        # Each runs as a savepoint of this transaction; the commit raises when the
        # fence does not hold, so the tickets are queued only after an accepted one.
        request = ops.commit(db, instance_id, token, write, commit_id)
        if tickets:
            steps.publish(db, tickets)
        return request

    def resolve() -> Done[ControlRequest | None] | None:
        # The commit and the tickets were one transaction: applied together or not.
        return ops.resolve_commit(db, instance_id, token, commit_id)

    return db.run("commit_and_publish", body, resolve=resolve)
