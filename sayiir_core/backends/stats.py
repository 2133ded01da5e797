"""Optional: counts a backend answers cheaply, for the ``sayiir.instances`` and
``sayiir.ready.*`` gauges.

A backend offers them by implementing ``BackendStats`` next to ``Backend`` (every shipped
backend does); the gauges stay empty for one that does not. Each method is one query
over an index (or one pass under the lock in memory), never a read of history, so the
telemetry can call it every few seconds on a busy database.

*Ready* means what a worker could claim at ``now``, whatever its workflow definitions:

* an instance ``claim_next`` would take (``rules.is_claimable``): pending or running
  with no live lease, parked with its wake-up due, or carrying a cancel/pause request;
* a published step ``claim_steps`` would take (backends with a step queue): not
  finished, queued or under an expired lease, of an unfinished instance.

An item has been ready since the latest of: its last write (an instance's
``updated_at``, a step's ``queued_at``), its due wake-up (``wake_at``, once past) and
the end of an expired lease (``lease_until``) — the moment a worker could first have
taken it. ``oldest_age`` is ``now`` minus the earliest of those instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sayiir_core.status import Status


@dataclass(frozen=True, slots=True)
class ReadyBacklog:
    """What workers could claim now: how many items, and how long the oldest has waited.

    ``oldest_age`` is in seconds (never negative), ``None`` when nothing is ready.
    """

    count: int
    oldest_age: float | None

    @classmethod
    def of(cls, count: int, oldest_ready_at: float | None, now: float) -> ReadyBacklog:
        """From a count and the earliest ready-since instant (``None`` for none)."""
        if not count or oldest_ready_at is None:
            return cls(count, None)
        return cls(count, max(0.0, now - oldest_ready_at))


EMPTY_BACKLOG = ReadyBacklog(0, None)


@runtime_checkable
class BackendStats(Protocol):
    """Storage-wide counts for gauges; optional, implemented by the shipped backends."""

    async def count_by_status(self) -> dict[Status, int]:
        """The number of instances in each status (statuses with none may be left out)."""
        ...

    async def ready_backlog(self, now: float) -> ReadyBacklog:
        """Instances and published steps a worker could claim at ``now`` (see the module)."""
        ...


def ready_since(
    updated_at: float, wake_at: float | None, lease_until: float | None, now: float
) -> float:
    """When a ready item became claimable: the latest of its last write, its due wake-up
    and the end of its expired lease (the rule every backend states in its own terms)."""
    since = updated_at
    if wake_at is not None and since < wake_at <= now:
        since = wake_at
    if lease_until is not None and since < lease_until <= now:
        since = lease_until
    return since
