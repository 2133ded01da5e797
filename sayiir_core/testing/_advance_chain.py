"""The shared helpers of ``AdvanceQueueContract``, and its ``commit_and_claim_next`` cases.

``CommitAndClaimNext`` (optional, on top of ``AdvanceQueue``): the commit that
checkpoints a chain's step and queues the next one also claims that one and keeps the
instance, for the same owner. The cases run through ``commit_and_claim_next``, which
falls back to ``commit_and_publish`` handing nothing over, so every "nothing is handed
over" case holds on every backend; the claims themselves are checked where the backend
has it. They fail for a backend that hands over too much: with a request asked, with
more than one step out, or to a stale token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pytest

from sayiir_core import Backend, Status
from sayiir_core.backends import Claim, ControlRequest, StepWrite
from sayiir_core.backends.step_queue import (
    AdvanceQueue,
    CommitAndClaimNext,
    CommittedChain,
    NextStepClaim,
    StepQueue,
    StepRef,
    StepResult,
    StepTicket,
    commit_and_claim_next,
)
from sayiir_core.errors import LeaseLostError
from sayiir_core.testing._support import HASH, NOW, TTL, create

WANTED = {"wf": HASH}


class AdvanceBackend(Backend, StepQueue, AdvanceQueue, Protocol):
    """A backend with the step queue and ``AdvanceQueue``: what these tests drive."""


def ticket(key: str, instance_id: str = "i-1") -> StepTicket:
    return StepTicket(StepRef(instance_id, key, 1), "wf", HASH, b"5", 3, NOW)


def released(
    status: Status = Status.WAITING,
    *,
    now: float = NOW + 1,
    checkpoints: Sequence[tuple[str, bytes]] = (),
    control: Mapping[str, Any] | None = None,
    output: bytes | None = None,
) -> StepWrite:
    """A write that lets go of the claim, as the end of a dispatched advance does."""
    return StepWrite(
        status, control or {}, now, checkpoints=checkpoints, output=output, release=True
    )


async def dispatched(ops: AdvanceBackend, instance_id: str, *keys: str) -> None:
    """An instance with checkpoint ``a``, parked on the steps ``keys``, released."""
    await create(ops, instance_id)
    claim = await ops.claim_if_free(instance_id, "w0", WANTED, TTL, NOW)
    assert claim is not None
    control = {"dispatched": dict.fromkeys(keys, 1)}
    write = released(control=control, checkpoints=[("a", b"2")])
    tickets = [ticket(key, instance_id) for key in keys]
    await ops.commit_and_publish(instance_id, claim.token, write, tickets)


class ChainCommitCases:
    """``commit_and_claim_next``: mixed into ``AdvanceQueueContract`` (its ``ops``)."""

    async def _holding_b(self, ops: AdvanceBackend) -> Claim:
        """The instance parked on step ``b`` (queued), claimed by ``w1`` to advance it."""
        await dispatched(ops, "i-1", "b")
        claim = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 2)
        assert claim is not None
        return claim

    async def _chain(self, ops: AdvanceBackend, claim: Claim, *keys: str) -> CommittedChain:
        """Checkpoint ``b`` and send ``keys``, asking to take the one next step."""
        control = {"dispatched": dict.fromkeys(keys, 1)}
        write = released(now=NOW + 3, control=control, checkpoints=[("b", b"6")])
        tickets = [ticket(key) for key in keys]
        next_claim = NextStepClaim("w1", TTL, TTL / 2, NOW + 3)
        return await commit_and_claim_next(ops, claim, write, tickets, next_claim)

    async def test_the_commit_claims_the_one_next_step_and_keeps_the_instance(
        self, ops: AdvanceBackend
    ) -> None:
        claim = await self._holding_b(ops)

        done = await self._chain(ops, claim, "c")

        assert done.request is None
        if not isinstance(ops, CommitAndClaimNext):
            assert done.next is None
            await self._nothing_handed_over(ops, "c")
            return
        assert done.next is not None
        step, held = done.next.step, done.next.instance
        assert (step.ticket.ref, step.ticket.input, step.taken_over) == (
            StepRef("i-1", "c", 1),
            b"5",
            False,
        )
        assert held is not None
        assert held.token > claim.token
        assert held.instance.checkpoints == {"a": b"2", "b": b"6"}
        record = await ops.get_record("i-1")
        assert record is not None
        assert (record.owner, record.claim_token, record.lease_until) == (
            "w1",
            held.token,
            NOW + 3 + TTL / 2,
        )
        assert held.instance.record == record  # what the backend holds, as it holds it
        # Both claims are live and fenced: nobody else takes them; their holder uses them.
        assert await ops.claim_step(StepRef("i-1", "c", 1), "w2", TTL, NOW + 4) is None
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 4) is None
        assert await ops.renew_step(step.ticket.ref, step.token, TTL, NOW + 4)
        result = StepResult("w1", NOW + 4, NOW + 5, output=b"7")
        assert await ops.finish_step(step.ticket.ref, step.token, result)
        done_write = released(Status.COMPLETED, now=NOW + 6, checkpoints=[("c", b"7")])
        await ops.commit_and_publish("i-1", held.token, done_write, [])
        record = await ops.get_record("i-1")
        assert record is not None
        assert record.status is Status.COMPLETED

    async def test_stale_tokens_cannot_use_what_was_handed_over(self, ops: AdvanceBackend) -> None:
        claim = await self._holding_b(ops)
        done = await self._chain(ops, claim, "c")
        if not isinstance(ops, CommitAndClaimNext):
            return  # nothing handed over (the case above)
        assert done.next is not None
        assert done.next.instance is not None
        step = done.next.step

        with pytest.raises(LeaseLostError):  # the advance's own claim is spent
            await ops.commit_and_publish("i-1", claim.token, released(now=NOW + 4), [])
        stale = StepResult("w9", NOW + 4, NOW + 5, output=b"x")
        assert not await ops.finish_step(step.ticket.ref, step.token - 1, stale)
        # Its lease ran out (its holder died): an ordinary takeover, a larger token.
        later = NOW + 3 + TTL + 1
        again = await ops.claim_step(step.ticket.ref, "w2", TTL, later)
        assert again is not None
        assert again.taken_over
        assert again.token > step.token
        assert not await ops.finish_step(step.ticket.ref, step.token, stale)
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, later) is not None

    @pytest.mark.parametrize("request_", [ControlRequest.PAUSE, ControlRequest.CANCEL])
    async def test_a_request_before_the_commit_hands_nothing_over(
        self, ops: AdvanceBackend, request_: ControlRequest
    ) -> None:
        """Asked while the advance held the instance: its commit honours it instead."""
        claim = await self._holding_b(ops)
        await ops.request_control("i-1", request_, "stop", None, NOW + 2)

        done = await self._chain(ops, claim, "c")

        assert done.request is request_
        assert done.next is None
        await self._nothing_handed_over(ops, "c")

    async def test_more_than_one_step_out_hands_nothing_over(self, ops: AdvanceBackend) -> None:
        claim = await self._holding_b(ops)

        done = await self._chain(ops, claim, "c", "d")

        assert done.next is None
        await self._nothing_handed_over(ops, "c", "d")

    async def test_another_step_still_running_hands_nothing_over(self, ops: AdvanceBackend) -> None:
        await dispatched(ops, "i-2", "b", "x")  # a fork: b and x out
        claim = await ops.claim_if_free("i-2", "w1", WANTED, TTL, NOW + 2)
        assert claim is not None
        assert await ops.claim_step(StepRef("i-2", "x", 1), "w5", TTL, NOW + 2) is not None
        write = released(
            now=NOW + 3, control={"dispatched": {"c": 1, "x": 1}}, checkpoints=[("b", b"6")]
        )

        next_claim = NextStepClaim("w1", TTL, TTL, NOW + 3)
        done = await commit_and_claim_next(ops, claim, write, [ticket("c", "i-2")], next_claim)

        assert done.next is None
        await self._nothing_handed_over(ops, "c", instance_id="i-2")

    async def test_another_step_finished_but_not_yet_applied_hands_nothing_over(
        self, ops: AdvanceBackend
    ) -> None:
        # Its outcome waits for an advance: handing c over would put that off until c's.
        await dispatched(ops, "i-2", "b", "x")  # a fork: b and x out
        claim = await ops.claim_if_free("i-2", "w1", WANTED, TTL, NOW + 2)
        assert claim is not None
        x = await ops.claim_step(StepRef("i-2", "x", 1), "w5", TTL, NOW + 2)
        assert x is not None
        result = StepResult("w5", NOW + 2, NOW + 2.5, output=b"7")
        assert await ops.finish_step(StepRef("i-2", "x", 1), x.token, result)
        write = released(
            now=NOW + 3, control={"dispatched": {"c": 1, "x": 1}}, checkpoints=[("b", b"6")]
        )

        next_claim = NextStepClaim("w1", TTL, TTL, NOW + 3)
        done = await commit_and_claim_next(ops, claim, write, [ticket("c", "i-2")], next_claim)

        assert done.next is None
        await self._nothing_handed_over(ops, "c", instance_id="i-2")

    async def test_a_finished_instance_or_a_step_queued_before_hands_nothing_over(
        self, ops: AdvanceBackend
    ) -> None:
        claim = await self._holding_b(ops)
        await ops.publish_steps([ticket("c")])  # queued already (published by another)
        assert (await self._chain(ops, claim, "c")).next is None
        await self._nothing_handed_over(ops, "c")

        last = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 4)
        assert last is not None
        write = released(Status.COMPLETED, now=NOW + 5, output=b"1")
        next_claim = NextStepClaim("w1", TTL, TTL, NOW + 5)
        done = await commit_and_claim_next(ops, last, write, [ticket("z")], next_claim)
        assert done.next is None

    async def test_a_refused_commit_claims_and_queues_nothing(self, ops: AdvanceBackend) -> None:
        claim = await self._holding_b(ops)
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 2 + TTL) is not None

        with pytest.raises(LeaseLostError):
            await self._chain(ops, claim, "c")

        assert await ops.claim_step(StepRef("i-1", "c", 1), "w3", TTL, NOW + 4) is None

    async def _nothing_handed_over(
        self, ops: AdvanceBackend, *keys: str, instance_id: str = "i-1"
    ) -> None:
        """The instance let go, the tickets queued for anyone."""
        record = await ops.get_record(instance_id)
        assert record is not None
        assert record.owner is None
        if record.status.is_terminal:
            return
        for key in keys:
            ref = StepRef(instance_id, key, 1)
            claimed = await ops.claim_step(ref, "w7", TTL, NOW + 4)
            assert claimed is not None
            assert not claimed.taken_over
