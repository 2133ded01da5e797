"""Claims and leases in one process: heartbeats keep a claim, takeovers fence the loser."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Backend,
    Flow,
    LeaseLostError,
    Worker,
    WorkerHandle,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
)
from sayiir_core.runtime.loop_thread import LoopThread

from .conftest import BackendFactory
from .helpers import Calls, wait_until, wait_until_async


@pytest.fixture
def handles() -> Iterator[list[WorkerHandle]]:
    started: list[WorkerHandle] = []
    yield started
    for handle in started:
        handle.shutdown()
    for handle in started:
        handle.join(10)


def test_heartbeat_keeps_the_claim_of_a_step_longer_than_the_lease(
    durable_backend: Backend, handles: list[WorkerHandle]
) -> None:
    calls = Calls()

    async def long_step(x: int) -> int:
        calls.add(x)
        await asyncio.sleep(1.0)
        return x

    wf = Flow("long").then(long_step).build()
    client = WorkflowClient(durable_backend)
    client.submit(wf, "long-1", 1)
    handles.append(Worker("holder", durable_backend, poll_interval=0.02, claim_ttl=0.3).start([wf]))
    wait_until(lambda: calls.items == [1], what="the step to start")
    # A second worker polls all along; the lease (0.3 s) is shorter than the step (1 s).
    handles.append(Worker("thief", durable_backend, poll_interval=0.02, claim_ttl=0.3).start([wf]))
    wait_until(lambda: client.status("long-1").is_finished(), what="the instance to finish")
    assert client.status("long-1").is_completed()
    assert calls.items == [1]
    workers = {e.worker_id for e in client.history("long-1") if e.kind.startswith("task_")}
    assert workers == {"holder"}


def test_a_takeover_fences_out_the_old_owner(durable_backend: Backend) -> None:
    """Two resumes of one instance: the late completion of the first is refused."""
    first_call = threading.Event()
    release_first = threading.Event()
    calls = Calls()

    def charge(x: int) -> int:
        calls.add(x)
        if len(calls.items) == 1:
            first_call.set()
            assert release_first.wait(10)
            return -1  # the zombie's result: must never be checkpointed
        return x * 100

    wf = Flow("fenced").then(charge).then(lambda x: x + 1, name="after").build()
    pool = ThreadPoolExecutor(max_workers=1)
    zombie = pool.submit(run_durable_workflow, wf, "f-1", 1, backend=durable_backend)
    try:
        assert first_call.wait(5)
        status = resume_workflow(wf, "f-1", durable_backend)  # takes the claim over
        assert status.output == 101
        release_first.set()
        with pytest.raises(LeaseLostError):
            zombie.result(timeout=10)
    finally:
        release_first.set()
        pool.shutdown(wait=True)

    client = WorkflowClient(durable_backend)
    assert client.get_task_result("f-1", "charge") == 100
    assert client.status("f-1").output == 101
    completed = [e.step_key for e in client.history("f-1") if e.kind == "task_completed"]
    assert completed == ["charge", "after"]


async def test_cancel_reaches_an_async_task_run_by_a_worker(durable_backend: Backend) -> None:
    started = asyncio.Event()
    cancelled = threading.Event()

    async def long_call(x: int) -> int:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    wf = Flow("cancel-in-worker").then(long_call).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "cw-1", 1)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        Worker("w", durable_backend, poll_interval=0.02).run([wf], stop=stop)
    )
    try:
        await asyncio.wait_for(started.wait(), 5)
        begun = time.monotonic()
        await client.cancel("cw-1", reason="stop", cancelled_by="tester")

        async def finished() -> bool:
            return (await client.status("cw-1")).is_finished()

        await wait_until_async(finished, what="the cancel to land")
        assert time.monotonic() - begun < 5
        status = await client.status("cw-1")
        assert status.is_cancelled()
        assert status.reason == "stop"
        assert status.cancelled_by == "tester"
        await wait_until_async(_is_set(cancelled), what="CancelledError in the task")
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)


def _is_set(event: threading.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check


async def test_pause_in_a_worker_then_unpause_continues(durable_backend: Backend) -> None:
    gate = asyncio.Event()
    calls = Calls()

    async def first(x: int) -> int:
        calls.add("first")
        await gate.wait()
        return x + 1

    async def second(x: int) -> int:
        calls.add("second")
        return x * 10

    wf = Flow("pause-in-worker").then(first).then(second).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "pw-1", 1)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        Worker("w", durable_backend, poll_interval=0.02).run([wf], stop=stop)
    )
    try:
        await wait_until_async(_has(calls, "first"), what="the first step")
        await client.pause("pw-1", paused_by="ops")
        gate.set()

        async def paused() -> bool:
            return (await client.status("pw-1")).is_paused()

        await wait_until_async(paused, what="the pause to settle")
        await asyncio.sleep(0.1)
        assert calls.items == ["first"]
        assert await client.get_task_result("pw-1", "first") == 2

        await client.unpause("pw-1")

        async def finished() -> bool:
            return (await client.status("pw-1")).is_finished()

        await wait_until_async(finished, what="the instance to finish")
        assert (await client.status("pw-1")).output == 20
        assert calls.items == ["first", "second"]
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)


def _has(calls: Calls, item: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return calls.count(item) > 0

    return check


def test_terminate_existing_fences_out_the_replaced_run(durable_backend: Backend) -> None:
    """A run still going on the replaced instance cannot write into the new one."""
    entered = {1: threading.Event(), 2: threading.Event()}
    release = {1: threading.Event(), 2: threading.Event()}

    def step(x: int) -> int:
        entered[x].set()
        assert release[x].wait(10)
        return x * 100

    wf = Flow("replaced").then(step).build()
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        old = pool.submit(run_durable_workflow, wf, "r-1", 1, backend=durable_backend)
        assert entered[1].wait(5)
        new = pool.submit(
            run_durable_workflow,
            wf,
            "r-1",
            2,
            backend=durable_backend,
            conflict_policy="terminate_existing",
        )
        assert entered[2].wait(5)
        release[1].set()
        with pytest.raises(LeaseLostError):
            old.result(timeout=10)
        release[2].set()
        assert new.result(timeout=10).output == 200
    finally:
        for event in release.values():
            event.set()
        pool.shutdown(wait=True)
    assert WorkflowClient(durable_backend).get_task_result("r-1", "step") == 200


def test_a_zombie_workers_late_completion_is_refused(
    open_backend: BackendFactory, handles: list[WorkerHandle]
) -> None:
    """Worker A's loop freezes past its lease; B takes over; A's late result is dropped.

    A runs on an event loop of its own (as a worker in another process would), so its
    freeze stalls only A: B claims while A is frozen, whatever order the backend's I/O
    completes in afterwards.
    """
    calls = Calls()
    frozen = threading.Event()
    thawed = threading.Event()

    async def charge(x: int) -> int:
        calls.add(x)
        if len(calls.items) == 1:
            frozen.set()
            # Blocks A's event loop on purpose: no heartbeat, so the lease runs out.
            time.sleep(1.0)  # noqa: ASYNC251
            thawed.set()
            return -1
        return x * 100

    wf = Flow("zombie").then(charge).build()
    backend = open_backend()
    client = WorkflowClient(backend)
    client.submit(wf, "z-1", 1)
    zombie_loop = LoopThread("zombie-loop")
    zombie_backend = open_backend()  # a connection of A's own, on A's loop
    stop_zombie = asyncio.Event()

    async def run_zombie() -> None:
        # Not sharing steps: B, taking the instance over, queues its step, and only B
        # may run it, so the history below tells B's run from A's.
        zombie = Worker("a", zombie_backend, poll_interval=0.02, claim_ttl=0.3, share_steps=False)
        try:
            await zombie.run([wf], stop=stop_zombie)
        finally:
            await zombie_backend.close()

    try:
        zombie_done = zombie_loop.submit(run_zombie())
        assert frozen.wait(5)
        handles.append(Worker("b", backend, poll_interval=0.02, claim_ttl=0.3).start([wf]))
        wait_until(lambda: client.status("z-1").is_finished(), what="worker b to finish")
        # A wakes up and tries to write its stale result; stopping A waits for that attempt.
        assert thawed.wait(5)
        zombie_loop.loop.call_soon_threadsafe(stop_zombie.set)
        zombie_done.result(10)
    finally:
        zombie_loop.stop()

    assert client.status("z-1").output == 100
    assert client.get_task_result("z-1", "charge") == 100
    completed = [
        (e.step_key, e.worker_id) for e in client.history("z-1") if e.kind == "task_completed"
    ]
    assert completed == [("charge", "b")]
    assert calls.items == [1, 1]
