"""``BackendStatsContract``: the counts behind the gauges (``backends/stats.py``).

For a backend that implements ``BackendStats``; on one that does not, every test here
skips, saying so. The step-queue part of the backlog is checked when the backend also
has a step queue.
"""

from __future__ import annotations

import pytest

from sayiir_core import Backend, Status
from sayiir_core.backends import ControlRequest
from sayiir_core.backends.stats import BackendStats, ReadyBacklog
from sayiir_core.backends.step_queue import StepQueue, StepRef, StepResult, StepTicket
from sayiir_core.testing._support import HASH, NOW, TTL, BackendFixtures, claimed, create, step


def _stats(backend: Backend) -> BackendStats:
    if not isinstance(backend, BackendStats):
        pytest.skip(f"{type(backend).__name__} does not implement BackendStats")
    return backend


class BackendStatsContract(BackendFixtures):
    """``count_by_status`` and ``ready_backlog``: what a worker could claim, how long the
    oldest of it has waited."""

    async def test_count_by_status_counts_every_instance_by_its_status(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        stats = _stats(backend)
        assert {s: n for s, n in (await stats.count_by_status()).items() if n} == {}

        await create(backend, "pending-1")
        await create(backend, "pending-2")
        token = await claimed(backend, "done")
        await backend.commit("done", token, step(Status.COMPLETED, output=b"1"))
        token = await claimed(backend, "parked")
        await backend.commit("parked", token, step(Status.WAITING, wake_at=NOW + 60, release=True))

        counts = await _stats(other_backend).count_by_status()

        assert {s: n for s, n in counts.items() if n} == {
            Status.PENDING: 2,
            Status.COMPLETED: 1,
            Status.WAITING: 1,
        }

    async def test_an_empty_backlog_has_no_oldest_age(self, backend: Backend) -> None:
        assert await _stats(backend).ready_backlog(NOW) == ReadyBacklog(0, None)

    async def test_a_pending_instance_is_ready_from_its_submit(self, backend: Backend) -> None:
        stats = _stats(backend)
        await create(backend, "i-1", now=NOW)
        await create(backend, "i-2", now=NOW + 4)

        assert await stats.ready_backlog(NOW + 10) == ReadyBacklog(2, 10.0)

    async def test_a_held_instance_is_ready_once_its_lease_expired(self, backend: Backend) -> None:
        stats = _stats(backend)
        await claimed(backend, "i-1")  # at NOW, the lease runs to NOW + TTL

        assert await stats.ready_backlog(NOW + TTL - 1) == ReadyBacklog(0, None)
        # Ready since its lease ran out, not since its last write (a takeover waits).
        assert await stats.ready_backlog(NOW + TTL + 5) == ReadyBacklog(1, 5.0)

    async def test_a_parked_instance_is_ready_once_its_wake_up_is_due(
        self, backend: Backend
    ) -> None:
        stats = _stats(backend)
        token = await claimed(backend, "i-1")
        await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 60, release=True))
        token = await claimed(backend, "i-2")
        await backend.commit("i-2", token, step(Status.AWAITING_SIGNAL, release=True))

        assert await stats.ready_backlog(NOW + 59) == ReadyBacklog(0, None)
        assert await stats.ready_backlog(NOW + 70) == ReadyBacklog(1, 10.0)

    async def test_finished_and_paused_instances_are_never_ready(self, backend: Backend) -> None:
        stats = _stats(backend)
        for status in (Status.COMPLETED, Status.FAILED):
            token = await claimed(backend, status.value)
            await backend.commit(status.value, token, step(status, release=True))
        await create(backend, "paused")
        await backend.request_control("paused", ControlRequest.PAUSE, None, None, NOW)

        assert await stats.ready_backlog(NOW + 1_000) == ReadyBacklog(0, None)

    async def test_published_steps_are_ready_until_claimed_or_finished(
        self, backend: Backend
    ) -> None:
        stats = _stats(backend)
        if not isinstance(backend, StepQueue):
            # Without a queue the backlog is the instances: one held here is not ready.
            await claimed(backend, "i-1")
            assert await stats.ready_backlog(NOW + 5) == ReadyBacklog(0, None)
            return
        token = await claimed(backend, "i-1")
        # The orchestrator holds the instance throughout: it is never ready itself.
        assert await backend.renew("i-1", token, 10 * TTL, NOW)
        await backend.publish_steps(
            [_ticket("a", NOW + 2), _ticket("b", NOW + 3), _ticket("c", NOW + 4)]
        )

        assert await stats.ready_backlog(NOW + 5) == ReadyBacklog(3, 3.0)

        claims = await backend.claim_steps("w2", {"wf": HASH}, TTL, NOW + 5, 2)
        assert [claim.ticket.ref.step_key for claim in claims] == ["a", "b"]
        assert await stats.ready_backlog(NOW + 6) == ReadyBacklog(1, 2.0)  # c, since NOW + 4

        first = claims[0]
        result = StepResult("w2", NOW + 5, NOW + 6, output=b"1")
        assert await backend.finish_step(first.ticket.ref, first.token, result)
        # b's lease (to NOW + 5 + TTL) ran out: ready again since then; a finished is not.
        later = NOW + 5 + TTL + 7
        assert await stats.ready_backlog(later) == ReadyBacklog(2, later - (NOW + 4))


def _ticket(key: str, published_at: float) -> StepTicket:
    return StepTicket(StepRef("i-1", key, 1), "wf", HASH, b"7", 3, published_at)
