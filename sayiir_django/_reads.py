"""The reads: an instance with its checkpoints, its record, one checkpoint; the table check.

Each is one statement without a transaction of its own (on SQLite an IMMEDIATE one would
wait for the write lock just to read).
"""

from __future__ import annotations

from sayiir_core.backends.base import InstanceRecord, LoadedInstance
from sayiir_core.backends.rows import RECORD_COLUMNS, record_from_values
from sayiir_django._instance_rows import instances
from sayiir_django._transactions import Database
from sayiir_django.models import Checkpoint


def check_tables(db: Database) -> None:
    def body() -> None:
        instances(db).exists()

    # No transaction: on SQLite an IMMEDIATE one would wait for any writer's lock.
    db.run("open", body, atomic=False)


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
