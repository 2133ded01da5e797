"""Claims: one instance by id, the next claimable ones, and lease renewals.

A claim raises the row's claim token, the fence every later write of the claimant is
checked against. ``claim_next`` locks its candidates with ``skip_locked`` on PostgreSQL
(SQLite's write lock covers the database), and looks first without locking anything, as
idle workers poll often.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce

from sayiir_core.backends.base import Claim, InstanceRecord, LoadedInstance
from sayiir_core.backends.rows import record_from_values
from sayiir_core.backends.rules import is_claimable
from sayiir_django._instance_rows import (
    PARKED,
    READY,
    UNFINISHED,
    checkpoints_of,
    instances,
    locked,
    require,
)
from sayiir_django._records import ROW_COLUMNS
from sayiir_django._transactions import Database, Done
from sayiir_django.models import WorkflowInstance


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
        Q(status__in=UNFINISHED)
        & (Q(owner__isnull=True) | Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        & (
            Q(control_request__isnull=False)
            | Q(status__in=READY)
            | Q(status__in=PARKED, wake_at__isnull=False, wake_at__lte=now)
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
