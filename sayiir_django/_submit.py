"""``create``: a new instance, or the conflict policy applied to an existing id.

On PostgreSQL a new id, the common case, is one statement (``_postgres.insert_new``);
an existing id, and every create elsewhere, is read, judged and written in one
transaction. Either resolves a connection lost at commit by finding the submission.
"""

from __future__ import annotations

from django.db import IntegrityError

from sayiir_core.backends.base import ConflictPolicy, InstanceRecord, NewInstance
from sayiir_core.backends.rows import record_from_values
from sayiir_core.backends.rules import (
    is_submission_of,
    keeps_existing,
    new_record,
    terminated_record,
)
from sayiir_core.status import Status
from sayiir_django import _postgres as postgres
from sayiir_django._instance_rows import (
    append_history,
    insert_instance,
    instances,
    last_history_seq,
    read_row,
)
from sayiir_django._reads import get_record
from sayiir_django._transactions import Database, Done
from sayiir_django._wakeups import announce_work, wake_in_process

# A create races with inserts and deletes of the same id at most this often.
_CREATE_ROUNDS = 5


def create(db: Database, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
    def body() -> tuple[InstanceRecord, bool]:
        row = read_row(db, new.instance_id)
        if row is None:
            record, started = new_record(new)
            # The history of an id outlives its instance (terminate_existing keeps it),
            # so a fresh instance still numbers its entries after any left over.
            last = last_history_seq(db, new.instance_id)
            insert_instance(db, record, append_history(db, new.instance_id, last, [started]))
        else:
            existing = record_from_values(row)
            if keeps_existing(existing, policy):
                return existing, False
            record, started = new_record(new, replaces=existing)
            # Delete and insert rather than update: the new row gets a new id, so it
            # lists as the newest instance, like any other fresh submission; its
            # checkpoints, signals and shared steps go with the old row.
            instances(db).filter(pk=row["id"]).delete()
            events = [terminated_record(new.now), started]
            insert_instance(
                db, record, append_history(db, new.instance_id, row["history_seq"], events)
            )
        if record.status is Status.PENDING:
            announce_work(db.alias)
        return record, True

    def resolve() -> Done[tuple[InstanceRecord, bool]] | None:
        # Ours if the stored instance carries this submission's identity and time.
        stored = get_record(db, new.instance_id)
        return (
            Done((stored, True)) if stored is not None and is_submission_of(stored, new) else None
        )

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
