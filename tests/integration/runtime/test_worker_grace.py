"""``Worker.run(stop=, grace=)``: work still running after the grace is handed over at once.

Every worker here has a lease (``claim_ttl``) of 300 s, far beyond the tests' waits: an
instance or a shared step that were not released on shutdown would not be taken over.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Backend,
    Flow,
    InMemoryBackend,
    Worker,
    Workflow,
    WorkflowClient,
)
from sayiir_core.runtime.loop_thread import run_sync

from .helpers import Calls, wait_until, wait_until_async

LEASE = 300.0
SETTLE = 20.0  # generous bound on a takeover that, without the release, takes LEASE


class Blocking:
    """Steps whose first run blocks until cancelled (unless ``block=False``); later runs
    return at once."""

    def __init__(self) -> None:
        self.calls = Calls()
        self.cancelled = Calls()

    def step(self, name: str, *, block: bool = True) -> Any:
        async def run(value: Any) -> Any:
            first = self.calls.count(name) == 0
            self.calls.add(name)
            if first and block:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled.add(name)
                    raise
            return f"{name}({value})"

        run.__name__ = name
        return run


def _completed_steps(history: list[Any]) -> collections.Counter[str]:
    return collections.Counter(
        event.step_key for event in history if event.kind == "task_completed"
    )


async def _start(
    backend: Backend, worker_id: str, workflow: Workflow, stop: asyncio.Event, grace: float
) -> asyncio.Task[None]:
    worker = Worker(worker_id, backend, poll_interval=0.02, claim_ttl=LEASE)
    return asyncio.create_task(worker.run([workflow], stop=stop, grace=grace))


async def test_a_step_running_past_the_grace_is_cancelled_and_its_instance_released(
    durable_backend: Backend,
) -> None:
    steps = Blocking()
    workflow = Flow("grace").then(steps.step("slow")).then(steps.step("after", block=False)).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(workflow, "g-1", 1)
    stop_a = asyncio.Event()
    worker_a = await _start(durable_backend, "worker-a", workflow, stop_a, grace=0.05)

    async def slow_started() -> bool:
        return steps.calls.count("slow") == 1

    await wait_until_async(slow_started, what="the slow step to start")
    stop_a.set()
    await asyncio.wait_for(worker_a, SETTLE)
    assert steps.cancelled.items == ["slow"]
    record = await durable_backend.get_record("g-1")
    assert record is not None
    assert record.owner is None, "the claim of the cancelled instance was kept"
    assert not (await client.status("g-1")).is_finished()

    stop_b = asyncio.Event()
    worker_b = await _start(durable_backend, "worker-b", workflow, stop_b, grace=5.0)
    try:
        status = await client.wait("g-1", timeout=SETTLE)
    finally:
        stop_b.set()
        await asyncio.wait_for(worker_b, SETTLE)
    assert status.output == "after(slow(1))"
    assert steps.calls.items == ["slow", "slow", "after"]  # the cancelled step ran again
    completed = _completed_steps(await client.history("g-1"))
    assert completed == {"slow": 1, "after": 1}  # each checkpoint written once
    workers = {e.worker_id for e in await client.history("g-1") if e.kind == "task_completed"}
    assert workers == {"worker-b"}


async def test_shared_steps_running_past_the_grace_are_released_too() -> None:
    backend = InMemoryBackend()  # a backend with a step queue
    steps = Blocking()
    workflow = (
        Flow("grace-fork")
        .fork()
        .branch(steps.step("left"))
        .branch(steps.step("right"))
        .join(lambda results: sorted(results.values()))
        .build()
    )
    client = AsyncWorkflowClient(backend)
    await client.submit(workflow, "gf-1", 1)
    stop_a = asyncio.Event()
    worker_a = await _start(backend, "worker-a", workflow, stop_a, grace=0.0)

    async def both_started() -> bool:
        return steps.calls.count("left") == 1 and steps.calls.count("right") == 1

    # One branch runs in the instance's runner, the other as a shared step of worker-a.
    await wait_until_async(both_started, what="both branches to start")
    stop_a.set()
    await asyncio.wait_for(worker_a, SETTLE)
    assert sorted(steps.cancelled.items) == ["left", "right"]

    stop_b = asyncio.Event()
    worker_b = await _start(backend, "worker-b", workflow, stop_b, grace=5.0)
    try:
        status = await client.wait("gf-1", timeout=SETTLE)
    finally:
        stop_b.set()
        await asyncio.wait_for(worker_b, SETTLE)
    assert status.output == ["left(1)", "right(1)"]
    assert sorted(steps.calls.items) == ["left", "left", "right", "right"]
    completed = _completed_steps(await client.history("gf-1"))
    assert completed["left"] == 1
    assert completed["right"] == 1


async def test_steps_that_finish_within_the_grace_are_checkpointed_not_cancelled(
    durable_backend: Backend,
) -> None:
    gate = asyncio.Event()
    calls = Calls()

    async def gated(value: int) -> int:
        calls.add("gated")
        await gate.wait()
        return value + 1

    workflow = Flow("grace-kept").then(gated).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(workflow, "gk-1", 1)
    stop = asyncio.Event()
    worker = await _start(durable_backend, "worker-a", workflow, stop, grace=60.0)

    async def started() -> bool:
        return calls.count("gated") == 1

    await wait_until_async(started, what="the gated step to start")
    stop.set()
    await asyncio.sleep(0.1)
    assert not worker.done(), "the worker stopped before the grace or the step ended"
    gate.set()
    await asyncio.wait_for(worker, SETTLE)
    status = await client.status("gk-1")
    assert status.is_completed()
    assert status.output == 2
    assert calls.items == ["gated"]


@pytest.mark.parametrize("grace", [-1.0, float("nan")])
async def test_a_negative_grace_is_refused(grace: float) -> None:
    worker = Worker("w", InMemoryBackend())
    workflow = Flow("grace-bad").then(lambda x: x).build()
    with pytest.raises(ValueError, match="grace must be >= 0"):
        await worker.run([workflow], stop=asyncio.Event(), grace=grace)


def test_a_worker_thread_started_with_a_grace_hands_its_running_step_over(
    durable_backend: Backend,
) -> None:
    # A sync test, so it runs on PostgreSQL too (through the loop thread of the sync API).
    steps = Blocking()
    workflow = Flow("grace-thread").then(steps.step("slow")).then(steps.step("after", block=False))
    built = workflow.build()
    client = WorkflowClient(durable_backend)
    client.submit(built, "gt-1", 1)
    first = Worker("worker-a", durable_backend, poll_interval=0.02, claim_ttl=LEASE)
    handle = first.start([built], grace=0.05)
    wait_until(lambda: steps.calls.count("slow") == 1, what="the slow step to start")
    handle.shutdown()
    handle.join(SETTLE)
    assert not handle.is_alive()
    assert steps.cancelled.items == ["slow"]
    record = run_sync(durable_backend.get_record("gt-1"))
    assert record is not None
    assert record.owner is None

    second = Worker("worker-b", durable_backend, poll_interval=0.02, claim_ttl=LEASE)
    with second.start([built], grace=5.0):
        status = client.wait("gt-1", timeout=SETTLE)
    assert status.output == "after(slow(1))"
    assert _completed_steps(client.history("gt-1")) == {"slow": 1, "after": 1}


def test_start_refuses_a_negative_grace() -> None:
    workflow = Flow("grace-bad-start").then(lambda x: x).build()
    with pytest.raises(ValueError, match="grace must be >= 0"):
        Worker("w", InMemoryBackend()).start([workflow], grace=-1)


def test_a_worker_thread_hands_its_running_fork_over_shared_steps_included(
    durable_backend: Backend,
) -> None:
    # On PostgreSQL and memory one branch runs as a shared step (released too); on
    # SQLite, which has no step queue, both run in the instance's runner.
    steps = Blocking()
    workflow = (
        Flow("grace-thread-fork")
        .fork()
        .branch(steps.step("left"))
        .branch(steps.step("right"))
        .join(lambda results: sorted(results.values()))
        .build()
    )
    client = WorkflowClient(durable_backend)
    client.submit(workflow, "gtf-1", 1)
    first = Worker("worker-a", durable_backend, poll_interval=0.02, claim_ttl=LEASE)
    handle = first.start([workflow], grace=0.0)
    wait_until(
        lambda: steps.calls.count("left") == 1 and steps.calls.count("right") == 1,
        what="both branches to start",
    )
    handle.shutdown()
    handle.join(SETTLE)
    assert sorted(steps.cancelled.items) == ["left", "right"]

    second = Worker("worker-b", durable_backend, poll_interval=0.02, claim_ttl=LEASE)
    with second.start([workflow], grace=5.0):
        status = client.wait("gtf-1", timeout=SETTLE)
    assert status.output == ["left(1)", "right(1)"]
    completed = _completed_steps(client.history("gtf-1"))
    assert (completed["left"], completed["right"]) == (1, 1)
