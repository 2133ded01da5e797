"""A client with ``local_workers`` hands a new instance straight to a worker on its loop.

The instance is stored claimed by the worker (``running``) and runs without a claim;
with no free slot, another event loop or a stopped worker it is stored ``pending`` for
any worker, as without ``local_workers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Flow,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    Worker,
    Workflow,
)
from sayiir_core.backends.base import Claim

from .test_worker_claims import CountingMemory, CountingSqlite

Counting = CountingMemory | CountingSqlite


@pytest.fixture(params=["memory", "sqlite"])
async def counting(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Counting]:
    backend: Counting
    if request.param == "memory":
        backend = CountingMemory()
    else:
        backend = CountingSqlite(tmp_path / "intake.db")
    yield backend
    await backend.close()


def gated_flow(name: str, gate: asyncio.Event) -> Workflow:
    async def hold(value: int) -> int:
        await gate.wait()
        return value

    def double(value: int) -> int:
        return value * 2

    return Flow(name).then(hold).then(double).build()


@asynccontextmanager
async def running(worker: Worker, workflows: list[Workflow]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(workflows, stop=stop))
    await asyncio.sleep(0)  # the worker's first step opens its intake
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def one_step(name: str) -> Workflow:
    def add_one(value: int) -> int:
        return value + 1

    return Flow(name).then(add_one).build()


async def test_a_submit_is_stored_claimed_and_runs_without_a_claim(counting: Counting) -> None:
    workflow = one_step("intake-basic")
    worker = Worker("w-1", counting, poll_interval=30.0)
    client = AsyncWorkflowClient(counting, local_workers=[worker])
    async with running(worker, [workflow]):
        assert worker.intake is not None
        status = await client.submit(workflow, "i-1", 41)
        assert status.status == "running"
        record = await counting.get_record("i-1")
        assert record is not None
        assert (record.owner, record.claim_token) == ("w-1", 1)
        assert await client.result("i-1", timeout=10) == 42
    # Nothing went through claim_next: the worker took the claim it was handed.
    assert "i-1" not in counting.counter.claims
    kinds = [event.kind for event in await client.history("i-1")]
    assert kinds == ["started", "task_started", "task_completed", "completed"]
    assert worker.intake is None


async def test_a_full_worker_leaves_the_instance_for_any_worker(counting: Counting) -> None:
    gate = asyncio.Event()
    workflow = gated_flow("intake-full", gate)
    worker = Worker("w-1", counting, poll_interval=0.02, concurrency=1)
    client = AsyncWorkflowClient(counting, local_workers=[worker])
    async with running(worker, [workflow]):
        assert (await client.submit(workflow, "first", 1)).status == "running"
        second = await client.submit(workflow, "second", 2)
        assert second.status == "in_progress"
        record = await counting.get_record("second")
        assert record is not None
        assert record.owner is None
        gate.set()
        assert await client.result("first", timeout=10) == 2
        assert await client.result("second", timeout=10) == 4
    assert counting.counter.claims == ["second"]


async def test_a_refused_submit_gives_its_slot_back(counting: Counting) -> None:
    gate = asyncio.Event()
    workflow = gated_flow("intake-refused", gate)
    worker = Worker("w-1", counting, poll_interval=0.02, concurrency=2)
    client = AsyncWorkflowClient(counting, local_workers=[worker])
    async with running(worker, [workflow]):
        assert (await client.submit(workflow, "taken", 1)).status == "running"
        with pytest.raises(InstanceAlreadyExistsError):
            await client.submit(workflow, "taken", 1)
        with pytest.raises(ValueError):
            await client.submit(workflow, "", 1)  # refused before anything is stored
        # The slot those reserved is free again: this one is handed over too.
        assert (await client.submit(workflow, "next", 2)).status == "running"
        gate.set()
        assert await client.result("next", timeout=10) == 4
        assert await client.result("taken", timeout=10) == 2


async def test_no_hand_over_outside_a_run_on_this_loop(counting: Counting) -> None:
    workflow = one_step("intake-outside")
    stopped = Worker("w-stopped", counting, poll_interval=0.02)
    client = AsyncWorkflowClient(counting, local_workers=[stopped])
    assert (await client.submit(workflow, "before", 1)).status == "in_progress"
    # A worker on another event loop (the sync API's loop thread) cannot be handed a
    # claim from here: the instance is left for it to claim.
    elsewhere = Worker("w-thread", counting, poll_interval=0.02)
    handle = elsewhere.start([workflow])
    try:
        client_here = AsyncWorkflowClient(counting, local_workers=[elsewhere])
        assert (await client_here.submit(workflow, "other-loop", 1)).status == "in_progress"
        assert await client.result("other-loop", timeout=10) == 2
        assert await client.result("before", timeout=10) == 2
    finally:
        handle.shutdown()
        await asyncio.to_thread(handle.join, 10)


async def test_a_stopping_worker_takes_nothing_more(counting: Counting) -> None:
    workflow = one_step("intake-stopping")
    worker = Worker("w-1", counting, poll_interval=0.02)
    client = AsyncWorkflowClient(counting, local_workers=[worker])
    async with running(worker, [workflow]) as stop:
        stop.set()
        assert (await client.submit(workflow, "late", 1)).status == "in_progress"
    async with running(Worker("w-2", counting, poll_interval=0.02), [workflow]):
        assert await client.result("late", timeout=10) == 2


async def test_a_submit_cancelled_while_storing_still_runs(tmp_path: Path) -> None:
    # SQLite writes in a thread, so a cancel can land while the insert is under way.
    # The hand-over does not depend on the caller: an instance that got stored runs
    # now, not after its lease (300 s here) expires.
    backend = CountingSqlite(tmp_path / "cancelled.db")
    workflow = one_step("intake-cancelled")
    worker = Worker("w-1", backend, poll_interval=30.0, claim_ttl=300.0)
    client = AsyncWorkflowClient(backend, local_workers=[worker])
    stored = 0
    try:
        async with running(worker, [workflow]):
            for yields in range(12):
                instance_id = f"c-{yields}"
                submitting = asyncio.create_task(client.submit(workflow, instance_id, 1))
                for _ in range(yields):
                    await asyncio.sleep(0)
                submitting.cancel()
                await asyncio.gather(submitting, return_exceptions=True)
                try:
                    output = await client.result(instance_id, timeout=10)
                except InstanceNotFoundError:
                    continue  # cancelled before the insert
                assert output == 2
                stored += 1
    finally:
        await backend.close()
    assert stored > 0


def test_local_workers_must_share_the_clients_backend() -> None:
    worker = Worker("w-1", CountingMemory())
    with pytest.raises(ValueError, match="another backend"):
        AsyncWorkflowClient(CountingMemory(), local_workers=[worker])


class HeldClaims(CountingMemory):
    """``claim_next`` waits for ``let_go`` once ``hold`` is set: a claim in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.holding = asyncio.Event()
        self.let_go = asyncio.Event()

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        if self.hold:
            self.holding.set()
            await self.let_go.wait()
        return await super().claim_next(owner, workflows, ttl, now, limit)


@pytest.mark.parametrize("backlog", [False, True], ids=["nothing-claimed", "slot-claimed"])
async def test_a_submit_during_a_claim_waits_for_its_outcome(backlog: bool) -> None:
    # The slots a claim asked for are not free until it returns: then the submit is
    # handed over if the claim left a slot, else stored for any worker.
    backend = HeldClaims()
    gate = asyncio.Event()
    workflow = gated_flow("intake-during-claim", gate)
    worker = Worker("w-1", backend, poll_interval=0.02, concurrency=1)
    client = AsyncWorkflowClient(backend, local_workers=[worker])
    async with running(worker, [workflow]):
        backend.hold = True
        if backlog:  # stored by a client without local workers: pending, for the claim
            await AsyncWorkflowClient(backend).submit(workflow, "waiting", 1)
        await asyncio.wait_for(backend.holding.wait(), 10)
        submitting = asyncio.create_task(client.submit(workflow, "new", 2))
        await asyncio.sleep(0.05)
        assert not submitting.done()  # waits for the claim in flight
        backend.let_go.set()
        status = await asyncio.wait_for(submitting, 10)
        assert status.status == ("in_progress" if backlog else "running")
        gate.set()
        assert await client.result("new", timeout=10) == 4
        if backlog:
            assert await client.result("waiting", timeout=10) == 2
