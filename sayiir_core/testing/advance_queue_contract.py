"""``AdvanceQueueContract``: the two writes of a dispatched advance (``AdvanceQueue``).

A backend with the step queue may also implement
``sayiir_core.backends.step_queue.AdvanceQueue``: ``claim_if_free`` takes an instance
only if that takes it from nobody, and ``commit_and_publish`` queues the newly ready
steps only if its commit is accepted, both atomically. On a backend without it every
test here skips, saying so (``advance_queue`` then builds the two from other methods).

``StepAndInstanceClaim`` (optional as well) claims a step and, when that step is its
instance's only one out and nothing is asked of the instance, the instance with it; the
cases run through ``claim_step_and_instance``, which falls back to ``claim_step``
alone, so its step half holds on every backend. ``CommitAndClaimNext``'s cases (a
chain's next step claimed by the commit before it) are in ``_advance_chain.py``.

The concurrency cases are the point: a get-then-claim could take an instance from a
live holder between its read and its write, and a stolen advance re-queued a step that
the holder had just checkpointed, so a copy of its message ran it again.
"""

from __future__ import annotations

import asyncio

import pytest

from sayiir_core import Backend, Status
from sayiir_core.backends import Claim, ControlRequest, StepWrite
from sayiir_core.backends.step_queue import (
    AdvanceQueue,
    ClaimedStepAndInstance,
    StepAndInstanceClaim,
    StepQueue,
    StepRef,
    claim_step_and_instance,
)
from sayiir_core.errors import InstanceNotFoundError, LeaseLostError
from sayiir_core.testing._advance_chain import (
    WANTED,
    AdvanceBackend,
    ChainCommitCases,
    dispatched,
    released,
    ticket,
)
from sayiir_core.testing._support import HASH, NOW, TTL, BackendFixtures, create

# How many claimers race for one instance in the concurrency cases.
_RACERS = 8


def _advancing(backend: Backend) -> AdvanceBackend:
    if not isinstance(backend, AdvanceQueue) or not isinstance(backend, StepQueue):
        pytest.skip(
            f"{type(backend).__name__} does not implement AdvanceQueue "
            "(sayiir_core.backends.step_queue), which is optional: advance_queue() "
            "builds it from the backend's other methods"
        )
    return backend


class AdvanceQueueContract(ChainCommitCases, BackendFixtures):
    """``claim_if_free`` never takes a live claim; ``commit_and_publish`` is fenced."""

    @pytest.fixture
    def ops(self, backend: Backend) -> AdvanceBackend:
        return _advancing(backend)

    @pytest.fixture
    def other_ops(self, other_backend: Backend) -> AdvanceBackend:
        return _advancing(other_backend)

    async def test_claim_if_free_takes_a_free_instance_with_its_checkpoints(
        self, ops: AdvanceBackend
    ) -> None:
        await create(ops)
        first = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert first is not None
        assert first.instance.record.owner == "w1"
        write = released(checkpoints=[("a", b"2")])
        assert await ops.commit_and_publish("i-1", first.token, write, []) is None

        again = await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 2)

        assert again is not None
        assert again.token > first.token
        assert again.token == again.instance.record.claim_token
        assert again.instance.checkpoints == {"a": b"2"}
        assert (again.instance.record.owner, again.instance.record.lease_until) == (
            "w2",
            NOW + 2 + TTL,
        )
        stored = await ops.get_record("i-1")
        assert stored is not None
        assert (stored.owner, stored.claim_token) == ("w2", again.token)

    async def test_claim_if_free_never_takes_a_live_claim(self, ops: AdvanceBackend) -> None:
        await create(ops)
        holder = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert holder is not None

        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + TTL - 1) is None
        assert await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 1) is None  # even its own
        # The holder's writes still go through: nothing was taken from it.
        await ops.commit_and_publish("i-1", holder.token, StepWrite(Status.RUNNING, {}, NOW), [])
        # Once its lease has run out, the instance is free again.
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + TTL + 1) is not None

    async def test_claim_if_free_never_takes_a_claim_made_by_claim(
        self, ops: AdvanceBackend
    ) -> None:
        await create(ops)
        holder = await ops.claim("i-1", "w1", TTL, NOW)

        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 1) is None

        record = await ops.get_record("i-1")
        assert record is not None
        assert (record.owner, record.claim_token) == ("w1", holder.token)

    async def test_claim_if_free_leaves_what_is_not_for_it(self, ops: AdvanceBackend) -> None:
        assert await ops.claim_if_free("nope", "w1", WANTED, TTL, NOW) is None
        await create(ops)
        assert await ops.claim_if_free("i-1", "w1", {"wf": "other"}, TTL, NOW) is None
        assert await ops.claim_if_free("i-1", "w1", {"other": HASH}, TTL, NOW) is None
        assert await ops.claim_if_free("i-1", "w1", {}, TTL, NOW) is None
        untouched = await ops.get_record("i-1")
        assert untouched is not None
        assert (untouched.owner, untouched.claim_token) == (None, 0)

        holder = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert holder is not None
        await ops.request_control("i-1", ControlRequest.PAUSE, None, None, NOW)
        await ops.commit_and_publish("i-1", holder.token, released(Status.PAUSED), [])
        assert await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 2) is None  # until unpause
        await ops.unpause("i-1", NOW + 3)
        claim = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 4)
        assert claim is not None
        done = released(Status.COMPLETED, now=NOW + 5, output=b"1")
        await ops.commit_and_publish("i-1", claim.token, done, [])
        assert await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW + 6) is None

    async def test_one_of_concurrent_claimers_wins(
        self, ops: AdvanceBackend, other_ops: AdvanceBackend
    ) -> None:
        await create(ops)
        sides = [ops, other_ops] * (_RACERS // 2)

        claims = await asyncio.gather(
            *(side.claim_if_free("i-1", f"w{n}", WANTED, TTL, NOW) for n, side in enumerate(sides))
        )

        won = [claim for claim in claims if claim is not None]
        assert len(won) == 1
        record = await ops.get_record("i-1")
        assert record is not None
        assert (record.owner, record.claim_token) == (won[0].instance.record.owner, won[0].token)

    async def test_concurrent_claimers_never_take_a_live_claim(
        self, ops: AdvanceBackend, other_ops: AdvanceBackend
    ) -> None:
        """The holder commits (keeping its claim) while others try to take it: none does,
        and its commits all go through."""
        await create(ops)
        holder = await ops.claim_if_free("i-1", "w0", WANTED, TTL, NOW)
        assert holder is not None

        async def holder_commits() -> None:
            for n in range(_RACERS):
                write = StepWrite(Status.RUNNING, {}, NOW + n, checkpoints=[(f"s{n}", b"1")])
                await ops.commit_and_publish("i-1", holder.token, write, [ticket(f"t{n}")])

        async def claim(side: AdvanceBackend, n: int) -> Claim | None:
            return await side.claim_if_free("i-1", f"w{n + 1}", WANTED, TTL, NOW + 1)

        sides = [ops, other_ops] * (_RACERS // 2)
        _, *claims = await asyncio.gather(
            holder_commits(), *(claim(side, n) for n, side in enumerate(sides))
        )

        assert claims == [None] * _RACERS
        loaded = await ops.load("i-1")
        assert loaded is not None
        assert (loaded.record.owner, loaded.record.claim_token) == ("w0", holder.token)
        assert len(loaded.checkpoints) == _RACERS

    async def test_commit_and_publish_queues_the_tickets_with_the_commit(
        self, ops: AdvanceBackend
    ) -> None:
        await create(ops)
        claim = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert claim is not None
        write = released(control={"dispatched": {"b": 1, "c": 1}}, checkpoints=[("a", b"2")])

        await ops.commit_and_publish("i-1", claim.token, write, [ticket("b"), ticket("c")])

        loaded = await ops.load("i-1")
        assert loaded is not None
        assert (loaded.record.status, loaded.record.owner) == (Status.WAITING, None)
        assert loaded.checkpoints == {"a": b"2"}
        assert await ops.claim_step(StepRef("i-1", "b", 1), "w2", TTL, NOW + 2) is not None
        assert await ops.claim_step(StepRef("i-1", "c", 1), "w3", TTL, NOW + 2) is not None

    async def test_commit_and_publish_wakes_idle_workers(self, ops: AdvanceBackend) -> None:
        """Queued tickets wake idle workers even when the commit leaves nothing runnable
        (the holder keeps its claim), as ``publish_steps`` does."""
        await create(ops)
        claim = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert claim is not None
        await ops.wait_for_work(0.05)  # PostgreSQL: sets up its LISTEN
        waiting = asyncio.create_task(ops.wait_for_work(30.0))
        await asyncio.sleep(0.1)

        write = StepWrite(Status.RUNNING, {"dispatched": {"b": 1}}, NOW + 1)
        await ops.commit_and_publish("i-1", claim.token, write, [ticket("b")])

        await asyncio.wait_for(waiting, 10.0)  # far less than its 30 s: it was woken

    async def test_a_refused_commit_and_publish_queues_nothing(self, ops: AdvanceBackend) -> None:
        """The fence covers the tickets: an advance that lost its claim re-queues no step
        (a step the new holder checkpointed meanwhile would be claimable again)."""
        await create(ops)
        old = await ops.claim_if_free("i-1", "w1", WANTED, 1.0, NOW)
        assert old is not None
        new = await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 2)  # old lease expired
        assert new is not None

        write = released(now=NOW + 3, checkpoints=[("a", b"2")])
        with pytest.raises(LeaseLostError):
            await ops.commit_and_publish("i-1", old.token, write, [ticket("b")])

        assert await ops.claim_step(StepRef("i-1", "b", 1), "w3", TTL, NOW + 4) is None
        loaded = await ops.load("i-1")
        assert loaded is not None
        assert loaded.checkpoints == {}
        assert (loaded.record.owner, loaded.record.claim_token) == ("w2", new.token)

    async def test_a_duplicate_checkpoint_refuses_the_tickets_too(
        self, ops: AdvanceBackend
    ) -> None:
        await create(ops)
        claim = await ops.claim_if_free("i-1", "w1", WANTED, TTL, NOW)
        assert claim is not None
        first = StepWrite(Status.RUNNING, {}, NOW + 1, checkpoints=[("a", b"2")])
        await ops.commit_and_publish("i-1", claim.token, first, [])

        again = released(now=NOW + 2, checkpoints=[("a", b"3")])
        with pytest.raises(LeaseLostError, match="already checkpointed"):
            await ops.commit_and_publish("i-1", claim.token, again, [ticket("b")])

        assert await ops.claim_step(StepRef("i-1", "b", 1), "w3", TTL, NOW + 4) is None
        loaded = await ops.load("i-1")
        assert loaded is not None
        assert loaded.checkpoints == {"a": b"2"}
        assert loaded.record.owner == "w1"  # the refused write released nothing

    async def test_commit_and_publish_of_an_unknown_instance_is_refused(
        self, ops: AdvanceBackend
    ) -> None:
        with pytest.raises(InstanceNotFoundError):
            await ops.commit_and_publish("nope", 1, released(), [ticket("b", "nope")])

    # -- claim_step_and_instance: the step exactly as claim_step; the instance only when
    # holding it blocks nobody (backends with StepAndInstanceClaim; else never) ----------

    async def _dispatched(self, ops: AdvanceBackend, *keys: str) -> None:
        await dispatched(ops, "i-1", *keys)

    async def _claim(
        self, ops: AdvanceBackend, key: str = "b", owner: str = "w1", now: float = NOW + 2
    ) -> ClaimedStepAndInstance | None:
        ref = StepRef("i-1", key, 1)
        return await claim_step_and_instance(ops, ref, owner, TTL, WANTED, TTL, now)

    async def test_the_only_step_out_comes_with_its_instance(self, ops: AdvanceBackend) -> None:
        await self._dispatched(ops, "b")

        claimed = await self._claim(ops)

        assert claimed is not None
        assert claimed.step.ticket.ref == StepRef("i-1", "b", 1)
        assert claimed.step.ticket.input == b"5"
        record = await ops.get_record("i-1")
        assert record is not None
        if not isinstance(ops, StepAndInstanceClaim):
            assert claimed.instance is None
            assert record.owner is None
            return
        assert claimed.instance is not None
        loaded = claimed.instance.instance
        assert loaded.checkpoints == {"a": b"2"}
        assert (loaded.record.owner, loaded.record.lease_until) == ("w1", NOW + 2 + TTL)
        assert (record.owner, record.claim_token) == ("w1", claimed.instance.token)
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 3) is None
        # The claim is an ordinary one: its holder commits and releases with it.
        done = released(now=NOW + 4, checkpoints=[("b", b"6")])
        await ops.commit_and_publish("i-1", claimed.instance.token, done, [])
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + 5) is not None

    async def test_the_step_half_is_claim_step(self, ops: AdvanceBackend) -> None:
        await self._dispatched(ops, "b")
        assert await self._claim(ops, key="nope") is None

        first = await self._claim(ops)
        assert first is not None
        assert not first.step.taken_over
        assert await self._claim(ops, owner="w2", now=NOW + 3) is None  # a duplicate delivery
        assert await ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW + TTL + 3) is not None
        # The step's lease ran out: a takeover, with a larger token; not the instance,
        # whose claim is live.
        again = await self._claim(ops, owner="w3", now=NOW + TTL + 4)
        assert again is not None
        assert again.step.token > first.step.token
        assert again.step.taken_over  # counted as a lease takeover
        assert again.instance is None

    async def test_no_instance_while_another_step_is_out(self, ops: AdvanceBackend) -> None:
        """A fork: the branch that holds the instance would keep its siblings' advances
        waiting, so no branch takes it with its step."""
        await self._dispatched(ops, "b", "c")

        claimed = await self._claim(ops)

        assert claimed is not None
        assert claimed.instance is None
        record = await ops.get_record("i-1")
        assert record is not None
        assert record.owner is None
        assert await self._claim(ops, key="c", owner="w2") is not None

    async def test_no_instance_with_a_request_pending(self, ops: AdvanceBackend) -> None:
        """A request the holder let go with (asked while it held the instance)."""
        await self._dispatched(ops, "b")
        holder = await ops.claim_if_free("i-1", "w9", WANTED, TTL, NOW + 1)
        assert holder is not None
        await ops.request_control("i-1", ControlRequest.CANCEL, "stop", None, NOW + 1)
        write = released(now=NOW + 1, control={"dispatched": {"b": 1}})
        assert await ops.commit_and_publish("i-1", holder.token, write, []) is not None

        claimed = await self._claim(ops)

        assert claimed is not None
        assert claimed.instance is None
        record = await ops.get_record("i-1")
        assert record is not None
        assert record.owner is None

    async def test_no_instance_held_by_another(self, ops: AdvanceBackend) -> None:
        await self._dispatched(ops, "b")
        holder = await ops.claim_if_free("i-1", "w9", WANTED, TTL, NOW + 1)
        assert holder is not None

        claimed = await self._claim(ops)

        assert claimed is not None
        assert claimed.instance is None
        record = await ops.get_record("i-1")
        assert record is not None
        assert (record.owner, record.claim_token) == ("w9", holder.token)

    async def test_one_of_concurrent_deliveries_wins(
        self, ops: AdvanceBackend, other_ops: AdvanceBackend
    ) -> None:
        await self._dispatched(ops, "b")
        sides = [ops, other_ops] * (_RACERS // 2)

        results = await asyncio.gather(
            *(self._claim(side, owner=f"w{n}") for n, side in enumerate(sides))
        )

        won = [result for result in results if result is not None]
        assert len(won) == 1
        record = await ops.get_record("i-1")
        assert record is not None
        if won[0].instance is not None:
            assert (record.owner, record.claim_token) == (
                won[0].instance.instance.record.owner,
                won[0].instance.token,
            )
        else:
            assert record.owner is None
