"""The shared step queue (``sayiir_core.backends.step_queue``) as ORM work.

A claim token is ``row id * 2**24 + claims`` (see ``SharedStep``): it names the row, so
renewing or finishing a step needs no join, and it never repeats, even for a step
deleted and published again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import F, Q

from sayiir_core.backends.rows import failure_json
from sayiir_core.backends.rules import missing
from sayiir_core.backends.step_queue import ClaimedStep, StepRef, StepResult, StepTicket
from sayiir_django._claims import definitions_filter
from sayiir_django._instance_rows import FINISHED, instances, locked
from sayiir_django._records import result_from_row
from sayiir_django._transactions import Database, Done
from sayiir_django._wakeups import announce_step_finished, announce_work
from sayiir_django.models import SharedStep

_CLAIM_BITS = 24
_TICKET_COLUMNS = (
    "id",
    "instance__instance_id",
    "step_key",
    "attempt",
    "workflow_id",
    "definition_hash",
    "input",
    "priority",
    "queued_at",
)
# Read when claiming: the claim count, and the owner of an expired lease (a takeover).
_CLAIMABLE_COLUMNS = (*_TICKET_COLUMNS, "claims", "owner")


def token_of(row_id: int, claims: int) -> int:
    return (row_id << _CLAIM_BITS) + claims


def _row_of(ref: StepRef, token: int) -> Q:
    """The one row a token can belong to, if it still holds that claim."""
    return Q(
        pk=token >> _CLAIM_BITS,
        claims=token & ((1 << _CLAIM_BITS) - 1),
        step_key=ref.step_key,
        attempt=ref.attempt,
    )


def steps(db: Database) -> Any:
    return SharedStep.objects.using(db.alias)


def publish(db: Database, tickets: Sequence[StepTicket]) -> None:
    ids = {ticket.ref.instance_id for ticket in tickets}

    def body() -> None:
        rows = dict(instances(db).filter(instance_id__in=ids).values_list("instance_id", "id"))
        for instance_id in ids - set(rows):
            raise missing(instance_id)
        # Their commits look for queue rows to clean up from now on.
        instances(db).filter(pk__in=list(rows.values()), has_shared_steps=False).update(
            has_shared_steps=True
        )
        # A ticket already queued (same instance, step and attempt) is left as it is.
        steps(db).bulk_create(
            [
                SharedStep(
                    instance_id=rows[t.ref.instance_id],
                    step_key=t.ref.step_key,
                    attempt=t.ref.attempt,
                    workflow_id=t.workflow_id,
                    definition_hash=t.definition_hash,
                    input=t.input,
                    priority=t.priority,
                    queued_at=t.now,
                )
                for t in tickets
            ],
            ignore_conflicts=True,
        )
        announce_work(db.alias)

    # Inserting the same tickets again inserts nothing.
    db.run("publish_steps", body, resolve=lambda: None)


def claim(
    db: Database,
    owner: str,
    workflows: Mapping[str, str],
    now: float,
    lease_until: float,
    limit: int,
    only: Sequence[str] | None,
) -> list[ClaimedStep]:
    if only is not None and not only:
        return []
    candidates = (
        steps(db)
        .filter(definitions_filter(workflows), finished_at__isnull=True)
        .filter(Q(owner__isnull=True) | Q(lease_until__lte=now))
        .exclude(instance__status__in=FINISHED)
        .order_by("priority", "queued_at", "id")
    )
    if only is not None:
        candidates = candidates.filter(instance__instance_id__in=only)

    def body() -> list[ClaimedStep]:
        rows = list(locked(db, candidates, skip_locked=True).values(*_CLAIMABLE_COLUMNS)[:limit])
        if not rows:
            return []
        steps(db).filter(pk__in=[row["id"] for row in rows]).update(
            owner=owner, claims=F("claims") + 1, lease_until=lease_until
        )
        return [_claimed(row, row["claims"] + 1, _was_held(row)) for row in rows]

    def resolve() -> Done[list[ClaimedStep]] | None:
        rows = [
            row
            for row in steps(db)
            .filter(owner=owner, lease_until=lease_until, finished_at__isnull=True)
            .values(*_TICKET_COLUMNS, "claims")
            if workflows.get(row["workflow_id"]) == row["definition_hash"]
            and (only is None or row["instance__instance_id"] in only)
        ]
        return Done([_claimed(row, row["claims"]) for row in rows]) if rows else None

    if not db.in_callers_transaction() and not db.run(
        "claim_steps", candidates.exists, atomic=False
    ):
        return []  # nothing to claim: no transaction, no lock
    return db.run("claim_steps", body, resolve=resolve)


def claim_one(
    db: Database, ref: StepRef, owner: str, now: float, lease_until: float
) -> ClaimedStep | None:
    """Claim the step ``ref`` if it is queued, or running under an expired lease."""
    candidate = (
        steps(db)
        .filter(
            instance__instance_id=ref.instance_id,
            step_key=ref.step_key,
            attempt=ref.attempt,
            finished_at__isnull=True,
        )
        .filter(Q(owner__isnull=True) | Q(lease_until__lte=now))
        .exclude(instance__status__in=FINISHED)
    )

    def body() -> ClaimedStep | None:
        # Of concurrent claims, one locks the row; the others skip it and get nothing.
        row = locked(db, candidate, skip_locked=True).values(*_CLAIMABLE_COLUMNS).first()
        if row is None:
            return None
        taken = (
            steps(db)
            .filter(pk=row["id"], claims=row["claims"])
            .update(owner=owner, claims=F("claims") + 1, lease_until=lease_until)
        )
        return _claimed(row, row["claims"] + 1, _was_held(row)) if taken else None

    def resolve() -> Done[ClaimedStep | None] | None:
        row = (
            steps(db)
            .filter(
                instance__instance_id=ref.instance_id,
                step_key=ref.step_key,
                attempt=ref.attempt,
                owner=owner,
                lease_until=lease_until,
                finished_at__isnull=True,
            )
            .values(*_TICKET_COLUMNS, "claims")
            .first()
        )
        return Done(_claimed(row, row["claims"])) if row is not None else Done(None)

    return db.run("claim_step", body, resolve=resolve)


def _was_held(row: Mapping[str, Any]) -> bool:
    """A claimable row with an owner holds an expired lease: claiming it is a takeover."""
    return row["owner"] is not None


def _claimed(row: Mapping[str, Any], claims: int, taken_over: bool = False) -> ClaimedStep:
    """The claim of ``row``; ``taken_over`` is unknown (``False``) for one found again."""
    ref = StepRef(row["instance__instance_id"], row["step_key"], row["attempt"])
    ticket = StepTicket(
        ref,
        row["workflow_id"],
        row["definition_hash"],
        bytes(row["input"]),
        row["priority"],
        row["queued_at"],
    )
    return ClaimedStep(ticket, token_of(row["id"], claims), taken_over)


def renew(db: Database, ref: StepRef, token: int, lease_until: float) -> bool:
    def body() -> bool:
        row = steps(db).filter(_row_of(ref, token), finished_at__isnull=True)
        return bool(row.update(lease_until=lease_until))

    return db.run("renew_step", body, resolve=lambda: None)


def finish(db: Database, ref: StepRef, token: int, result: StepResult) -> bool:
    error = failure_json(result)

    def body() -> bool:
        updated = (
            steps(db)
            .filter(_row_of(ref, token))
            .update(
                owner=None,
                lease_until=None,
                worker_id=result.worker_id,
                started_at=result.started_at,
                finished_at=result.finished_at,
                output=result.output,
                error=error,
            )
        )
        if updated:
            announce_step_finished(db.alias)
        return bool(updated)

    # Writing the same outcome under the same token twice is writing it once.
    return db.run("finish_step", body, resolve=lambda: None)


def results(db: Database, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
    wanted = set(refs)
    found = (
        steps(db)
        .filter(
            finished_at__isnull=False,
            instance__instance_id__in={ref.instance_id for ref in refs},
            step_key__in={ref.step_key for ref in refs},
        )
        .values(
            "instance__instance_id",
            "step_key",
            "attempt",
            "worker_id",
            "started_at",
            "finished_at",
            "output",
            "error",
        )
    )

    def body() -> dict[StepRef, StepResult]:
        outcomes = {}
        for row in found:
            ref = StepRef(row["instance__instance_id"], row["step_key"], row["attempt"])
            if ref in wanted:
                outcomes[ref] = result_from_row(row)
        return outcomes

    return db.run("step_results", body, atomic=False)
