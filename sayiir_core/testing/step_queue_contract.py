"""``StepQueueContract``: the shared step queue (``StepQueue``) of a backend that has one.

A backend offers the queue by implementing ``sayiir_core.backends.step_queue.StepQueue``
next to ``Backend``; on a backend without it every test here skips, saying so. That
includes ``claim_step``, with which a dispatcher (a Celery message, say) claims the one
step it was told about.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import pytest

from sayiir_core import Backend, ConflictPolicy, Status
from sayiir_core.backends import ControlRequest, StepWrite
from sayiir_core.backends.step_queue import StepQueue, StepRef, StepResult, StepTicket
from sayiir_core.status import ErrorInfo
from sayiir_core.testing._support import HASH, NOW, TTL, BackendFixtures, claimed, new

WORKFLOWS = {"wf": HASH}


class QueueBackend(Backend, StepQueue, Protocol):
    """A backend with the step queue: what the step-queue tests drive."""


def ref(key: str = "b", attempt: int = 1, instance_id: str = "i-1") -> StepRef:
    return StepRef(instance_id, key, attempt)


def ticket(
    key: str = "b",
    attempt: int = 1,
    *,
    instance_id: str = "i-1",
    priority: int = 3,
    now: float = NOW,
    definition_hash: str = HASH,
    input: bytes = b"7",
) -> StepTicket:
    return StepTicket(ref(key, attempt, instance_id), "wf", definition_hash, input, priority, now)


def succeeded(output: bytes = b"8", worker_id: str = "w2") -> StepResult:
    return StepResult(worker_id, NOW + 1, NOW + 2, output=output)


def commit(checkpoints: list[tuple[str, bytes]], status: Status = Status.RUNNING) -> StepWrite:
    return StepWrite(status=status, control={}, now=NOW + 3, checkpoints=checkpoints)


class StepQueueContract(BackendFixtures):
    """Publishing, claiming (fenced by tokens), renewing and finishing shared steps; the
    instance's commits and control requests clean the queue; wake-ups of idle workers
    and waiting orchestrators."""

    @pytest.fixture
    def queue(self, backend: Backend) -> QueueBackend:
        if not isinstance(backend, StepQueue):
            pytest.skip(
                f"{type(backend).__name__} does not implement StepQueue "
                "(sayiir_core.backends.step_queue), which is optional: workers on it run "
                "every step of an instance themselves"
            )
        return backend

    async def test_a_published_step_is_claimed_once(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])

        (first,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10)
        assert first.ticket == ticket()
        assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW, 10) == []

        # Publishing it again (an orchestrator that took over) changes nothing.
        await queue.publish_steps([ticket(input=b"other")])
        assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + 1, 10) == []

    async def test_claims_match_the_definition_and_keep_priority_order(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps(
            [
                ticket("late", now=NOW + 2),
                ticket("early", now=NOW + 1),
                ticket("urgent", now=NOW + 3, priority=1),
                ticket("other-definition", definition_hash="hash-2"),
            ]
        )

        claims = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 2)
        assert [c.ticket.ref.step_key for c in claims] == ["urgent", "early"]
        claims = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 10)
        assert [c.ticket.ref.step_key for c in claims] == ["late"]
        assert await queue.claim_steps("w2", {"other": HASH}, TTL, NOW + 5, 10) == []
        (other,) = await queue.claim_steps("w2", {"wf": "hash-2"}, TTL, NOW + 5, 10)
        assert other.ticket.ref.step_key == "other-definition"

    async def test_an_expired_step_lease_is_taken_over_and_fences_the_old_owner(
        self,
        queue: QueueBackend,
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (old,) = await queue.claim_steps("zombie", WORKFLOWS, TTL, NOW, 1)
        assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL - 1, 1) == []

        (new_claim,) = await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL, 1)
        assert new_claim.token == old.token + 1

        assert not await queue.renew_step(ref(), old.token, TTL, NOW + TTL + 1)
        assert not await queue.finish_step(ref(), old.token, succeeded(b"zombie", "zombie"))
        assert await queue.step_results([ref()]) == {}
        assert await queue.finish_step(ref(), new_claim.token, succeeded(b"8", "w3"))
        assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "w3")}
        # The zombie, later still, cannot overwrite the stored outcome either.
        assert not await queue.finish_step(ref(), old.token, succeeded(b"zombie", "zombie"))
        assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "w3")}

    async def test_a_claim_says_whether_it_took_an_expired_lease_over(
        self, queue: QueueBackend
    ) -> None:
        """``taken_over`` feeds the lease takeover metric: a first claim is not one, a
        claim of a step whose lease ran out is, through either way of claiming."""
        await claimed(queue)
        await queue.publish_steps([ticket("b", now=NOW), ticket("c", now=NOW + 1)])
        (first,) = await queue.claim_steps("zombie", WORKFLOWS, TTL, NOW, 1)
        named = await queue.claim_step(ref("c"), "zombie", TTL, NOW)
        assert named is not None
        assert (first.taken_over, named.taken_over) == (False, False)

        (again,) = await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL, 1)
        named_again = await queue.claim_step(ref("c"), "w3", TTL, NOW + TTL)
        assert named_again is not None
        assert (again.ticket.ref, again.taken_over) == (ref("b"), True)
        assert named_again.taken_over
        # One step fresh, one taken over, in one claim: each says which it is.
        await queue.publish_steps([ticket("d", now=NOW + 2)])
        claims = await queue.claim_steps("w4", WORKFLOWS, TTL, NOW + 2 * TTL, 10)
        assert {c.ticket.ref.step_key: c.taken_over for c in claims} == {
            "b": True,
            "c": True,
            "d": False,
        }

    async def test_a_renewed_step_lease_is_not_taken_over(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)

        assert await queue.renew_step(ref(), claim.token, TTL, NOW + TTL - 1)
        assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL + 1, 1) == []
        assert await queue.finish_step(ref(), claim.token, succeeded())
        assert not await queue.renew_step(ref(), claim.token, TTL, NOW + 2)  # finished

    async def test_a_failed_attempt_keeps_its_error_retryability_and_traceback(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
        error = ErrorInfo("ValueError", "bad \u0000 input", "b", "task")
        failed = StepResult("w2", NOW, NOW + 1, error=error, retryable=True, traceback="Trace")

        assert await queue.finish_step(ref(), claim.token, failed)

        assert await queue.step_results([ref(), ref("other")]) == {ref(): failed}

    async def test_results_are_only_those_of_finished_steps(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket("b"), ticket("c"), ticket("d")])
        claims = {
            c.ticket.ref.step_key: c for c in await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 2)
        }
        assert set(claims) == {"b", "c"}
        assert await queue.finish_step(ref("c"), claims["c"].token, succeeded(b"3"))

        assert await queue.step_results([ref("b"), ref("c"), ref("d"), ref("c", 2)]) == {
            ref("c"): succeeded(b"3")
        }

    async def test_a_checkpoint_removes_every_attempt_of_its_step(
        self, queue: QueueBackend
    ) -> None:
        token = await claimed(queue)
        await queue.publish_steps([ticket("b", 1), ticket("b", 2), ticket("c")])
        for claim in await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10):
            await queue.finish_step(claim.ticket.ref, claim.token, succeeded())

        await queue.commit("i-1", token, commit([("b", b"8")]))

        refs = [ref("b", 1), ref("b", 2), ref("c")]
        assert set(await queue.step_results(refs)) == {ref("c")}
        await queue.commit("i-1", token, commit([], Status.FAILED))
        assert await queue.step_results(refs) == {}

    async def test_cancelling_an_instance_nobody_runs_drops_its_steps(
        self, queue: QueueBackend
    ) -> None:
        token = await claimed(queue)
        await queue.publish_steps([ticket("b"), ticket("c")])
        (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
        await queue.finish_step(claim.ticket.ref, claim.token, succeeded())
        await queue.commit("i-1", token, StepWrite(Status.RUNNING, {}, NOW, release=True))

        await queue.request_control("i-1", ControlRequest.CANCEL, "stop", "test", NOW + 1)

        assert await queue.step_results([ref("b"), ref("c")]) == {}  # the finished one too
        assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 2, 10) == []
        # Published again, the queued one would still not be claimed for a cancelled instance.
        await queue.publish_steps([ticket("d")])
        assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 2, 10) == []

    async def test_a_step_published_again_never_reuses_an_old_token(
        self, queue: QueueBackend
    ) -> None:
        """A step deleted with its instance and published by the new one: the old claimant's
        token must not fence in the new claim (terminate_existing, retry_from)."""
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (old,) = await queue.claim_steps("old", WORKFLOWS, TTL, NOW, 1)
        await queue.create(new(now=NOW + 1), ConflictPolicy.TERMINATE_EXISTING)
        await queue.claim("i-1", "w1", TTL, NOW + 1)
        await queue.publish_steps([ticket(input=b"new input")])

        (fresh,) = await queue.claim_steps("new", WORKFLOWS, TTL, NOW + 2, 1)

        assert fresh.token != old.token
        assert fresh.ticket.input == b"new input"
        assert not await queue.renew_step(ref(), old.token, TTL, NOW + 3)
        assert not await queue.finish_step(ref(), old.token, succeeded(b"stale", "old"))
        assert await queue.finish_step(ref(), fresh.token, succeeded(b"8", "new"))
        assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "new")}

    async def test_claims_can_be_limited_to_some_instances(self, queue: QueueBackend) -> None:
        await claimed(queue, "i-1")
        await claimed(queue, "i-2")
        await queue.publish_steps([ticket(instance_id="i-1"), ticket(instance_id="i-2")])

        (only,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10, instances={"i-2"})
        assert only.ticket.ref.instance_id == "i-2"
        assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10, instances=set()) == []
        (rest,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10)
        assert rest.ticket.ref.instance_id == "i-1"

    async def test_retry_from_and_terminate_existing_drop_queued_steps(
        self, queue: QueueBackend
    ) -> None:
        token = await claimed(queue)
        await queue.commit("i-1", token, commit([("a", b"1")]))
        await queue.publish_steps([ticket("b")])
        await queue.commit("i-1", token, StepWrite(Status.RUNNING, {}, NOW, release=True))

        await queue.reset_from("i-1", "a", NOW + 4)
        assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 10) == []

        await queue.claim("i-1", "w1", TTL, NOW + 5)
        await queue.publish_steps([ticket("b")])
        await queue.create(new(now=NOW + 6), ConflictPolicy.TERMINATE_EXISTING)
        assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 7, 10) == []

    async def test_finishing_a_step_wakes_a_waiting_orchestrator(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
        await queue.wait_for_step_results(0.05)  # PostgreSQL: sets up its LISTEN
        waiting = asyncio.create_task(queue.wait_for_step_results(30.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()

        assert await queue.finish_step(ref(), claim.token, succeeded())
        await asyncio.wait_for(waiting, 10.0)  # far less than its 30 s: it was woken
        assert time.monotonic() - started < 10.0

    async def test_publishing_wakes_idle_workers(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.wait_for_work(0.05)
        waiting = asyncio.create_task(queue.wait_for_work(30.0))
        await asyncio.sleep(0.1)

        await queue.publish_steps([ticket()])

        await asyncio.wait_for(waiting, 10.0)

    # -- claim_step: a dispatcher claims the one step it was told about ------------------

    async def test_claim_step_claims_that_step_alone_with_a_token(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket("b"), ticket("c")])

        claim = await queue.claim_step(ref("b"), "w2", TTL, NOW)

        assert claim is not None
        assert claim.ticket == ticket("b")
        assert await queue.renew_step(ref("b"), claim.token, TTL, NOW + 5)
        assert await queue.finish_step(ref("b"), claim.token, succeeded())
        # Only that step: its sibling is still there for any worker.
        (other,) = await queue.claim_steps("w3", WORKFLOWS, TTL, NOW, 10)
        assert other.ticket.ref == ref("c")

    async def test_claim_step_of_a_step_under_a_live_lease_gets_none(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        (held,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)

        assert await queue.claim_step(ref(), "w3", TTL, NOW + TTL - 1) is None
        # The same message delivered twice to the worker holding it claims nothing either.
        assert await queue.claim_step(ref(), "w2", TTL, NOW + 1) is None
        assert await queue.finish_step(ref(), held.token, succeeded())  # still its claim

    async def test_claim_step_takes_over_an_expired_lease_and_fences_the_old_owner(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        frozen = await queue.claim_step(ref(), "zombie", TTL, NOW)
        assert frozen is not None

        takeover = await queue.claim_step(ref(), "w3", TTL, NOW + TTL)  # lease_until <= now

        assert takeover is not None
        assert takeover.ticket == ticket()
        assert takeover.token > frozen.token
        assert not await queue.renew_step(ref(), frozen.token, TTL, NOW + TTL + 1)
        assert not await queue.finish_step(ref(), frozen.token, succeeded(b"stale", "zombie"))
        assert await queue.finish_step(ref(), takeover.token, succeeded(b"8", "w3"))
        assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "w3")}

    async def test_claim_step_of_a_finished_step_gets_none(self, queue: QueueBackend) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        claim = await queue.claim_step(ref(), "w2", TTL, NOW)
        assert claim is not None
        assert await queue.finish_step(ref(), claim.token, succeeded())

        assert await queue.claim_step(ref(), "w3", TTL, NOW + 10 * TTL) is None
        assert await queue.step_results([ref()]) == {ref(): succeeded()}

    async def test_claim_step_of_a_step_never_published_gets_none(
        self, queue: QueueBackend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])

        assert await queue.claim_step(ref("b", attempt=2), "w2", TTL, NOW) is None
        assert await queue.claim_step(ref("other"), "w2", TTL, NOW) is None
        assert await queue.claim_step(ref(instance_id="nope"), "w2", TTL, NOW) is None
        assert await queue.claim_step(ref(), "w2", TTL, NOW) is not None

    async def test_claim_step_of_a_withdrawn_step_gets_none(self, queue: QueueBackend) -> None:
        token = await claimed(queue)
        await queue.publish_steps([ticket("b"), ticket("c")])

        # The orchestrator ran "b" itself and checkpointed it: its queue row went.
        await queue.commit("i-1", token, commit([("b", b"8")]))
        assert await queue.claim_step(ref("b"), "w2", TTL, NOW + 4) is None
        # retry_from drops what is still queued.
        await queue.commit("i-1", token, StepWrite(Status.RUNNING, {}, NOW + 4, release=True))
        await queue.reset_from("i-1", "b", NOW + 5)
        assert await queue.claim_step(ref("c"), "w2", TTL, NOW + 6) is None

    @pytest.mark.parametrize("finish", ["failed", "cancelled", "cancelled-at-once"])
    async def test_claim_step_of_a_finished_instance_gets_none(
        self, queue: QueueBackend, finish: str
    ) -> None:
        token = await claimed(queue)
        await queue.publish_steps([ticket()])

        if finish == "failed":
            await queue.commit("i-1", token, commit([], Status.FAILED))
        elif finish == "cancelled":  # asked for under the claim, honoured at its next commit
            await queue.request_control("i-1", ControlRequest.CANCEL, "stop", "ops", NOW + 1)
            await queue.commit("i-1", token, commit([], Status.CANCELLED))
        else:  # nobody holds a live claim: the cancel applies at once
            cancel_at = NOW + TTL + 1  # after the orchestrator's lease
            await queue.request_control("i-1", ControlRequest.CANCEL, "stop", "ops", cancel_at)

        assert await queue.claim_step(ref(), "w2", TTL, NOW + TTL + 2) is None

    async def test_of_concurrent_claim_steps_exactly_one_wins(
        self, queue: QueueBackend, other_backend: Backend
    ) -> None:
        await claimed(queue)
        await queue.publish_steps([ticket()])
        assert isinstance(other_backend, StepQueue)  # the same kind of backend as ``queue``
        claimants: list[StepQueue] = [queue, other_backend] * 3

        claims = await asyncio.gather(
            *(claimant.claim_step(ref(), f"w{n}", TTL, NOW) for n, claimant in enumerate(claimants))
        )

        assert len([claim for claim in claims if claim is not None]) == 1
