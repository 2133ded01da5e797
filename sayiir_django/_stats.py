"""``BackendStats`` (``sayiir_core.backends.stats``) as ORM work: two aggregates.

The instance backlog filters with ``claim_next``'s own condition (``_operations.claimable``)
and the step backlog with ``claim_steps``'; both aggregate in the database (``COUNT`` and
``MIN``), so no row is sent back and history is never read.
"""

from __future__ import annotations

from django.db.models import Case, Count, F, FloatField, Min, Q, Value, When
from django.db.models.functions import Greatest

from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.status import Status
from sayiir_django._operations import FINISHED, claimable, instances
from sayiir_django._step_queue import steps
from sayiir_django._transactions import Database


def _past(field: str, now: float) -> Case:
    """``field`` when it is at or before ``now``, else 0 (so it never wins ``Greatest``)."""
    return Case(
        When(**{f"{field}__lte": now}, then=F(field)),
        default=Value(0.0),
        output_field=FloatField(),
    )


def count_by_status(db: Database) -> dict[Status, int]:
    def body() -> dict[Status, int]:
        rows = instances(db).order_by().values_list("status").annotate(n=Count("id"))
        return {Status(status): n for status, n in rows}

    return db.run("count_by_status", body, atomic=False)


def ready_backlog(db: Database, now: float) -> ReadyBacklog:
    """stats.ready_since in the database: the latest of the last write, a due wake-up and
    the end of an expired lease, then the earliest of those over the ready rows."""

    def body() -> ReadyBacklog:
        ready_instances = (
            instances(db)
            .filter(claimable(now))
            .aggregate(
                n=Count("id"),
                oldest=Min(
                    Greatest(
                        F("updated_at"),
                        _past("wake_at", now),
                        _past("lease_until", now),
                        output_field=FloatField(),
                    )
                ),
            )
        )
        ready_steps = (
            steps(db)
            .filter(finished_at__isnull=True)
            .filter(Q(owner__isnull=True) | Q(lease_until__lte=now))
            .exclude(instance__status__in=FINISHED)
            .aggregate(
                n=Count("id"),
                oldest=Min(
                    Greatest(F("queued_at"), _past("lease_until", now), output_field=FloatField())
                ),
            )
        )
        earliest = [v for v in (ready_instances["oldest"], ready_steps["oldest"]) if v is not None]
        count = ready_instances["n"] + ready_steps["n"]
        return ReadyBacklog.of(count, min(earliest, default=None), now)

    # One transaction: both counts from the same moment.
    return db.run("ready_backlog", body)
