"""``AsyncWorkflowClient`` with a worker running inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Backend,
    Flow,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidStateError,
    SerializationError,
    WaitTimeoutError,
    Worker,
    Workflow,
)

from .helpers import Calls, wait_until_async

WorkerStarter = Callable[[Sequence[Workflow]], None]


@pytest.fixture
async def run_worker(durable_backend: Backend) -> AsyncIterator[WorkerStarter]:
    """Start ``await worker.run(workflows, stop=event)`` as a task; stop it afterwards."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(workflows: Sequence[Workflow]) -> None:
        worker = Worker(f"async-{len(tasks)}", durable_backend, poll_interval=0.02)
        tasks.append(asyncio.create_task(worker.run(workflows, stop=stop)))

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)


async def wait_finished(client: AsyncWorkflowClient, instance_id: str) -> None:
    async def finished() -> bool:
        return (await client.status(instance_id)).is_finished()

    await wait_until_async(finished, what=f"{instance_id} to finish")


def pipeline(calls: Calls) -> Workflow:
    async def fetch(x: int) -> list[int]:
        calls.add("fetch")
        await asyncio.sleep(0)
        return [x, x + 1, x + 2]

    def total(values: list[int]) -> int:
        calls.add("total")
        return sum(values)

    return Flow("async-pipeline").then(fetch).then(total).build()


async def test_submit_and_worker_run(durable_backend: Backend, run_worker: WorkerStarter) -> None:
    calls = Calls()
    wf = pipeline(calls)
    client = AsyncWorkflowClient(durable_backend)
    submitted = await client.submit(wf, "a-1", 1)
    assert submitted.status == "in_progress"
    with pytest.raises(InstanceAlreadyExistsError):
        await client.submit(wf, "a-1", 1)

    run_worker([wf])
    await wait_finished(client, "a-1")
    status = await client.status("a-1")
    assert status.is_completed()
    assert status.output == 6
    assert await client.get_task_result("a-1", "fetch") == [1, 2, 3]
    assert calls.items == ["fetch", "total"]
    kinds = [e.kind for e in await client.history("a-1")]
    assert kinds[0] == "started"
    assert kinds[-1] == "completed"


async def test_worker_runs_many_instances(
    durable_backend: Backend, run_worker: WorkerStarter
) -> None:
    calls = Calls()
    wf = pipeline(calls)
    client = AsyncWorkflowClient(durable_backend)
    for i in range(6):
        await client.submit(wf, f"many-{i}", i)
    run_worker([wf])
    for i in range(6):
        await wait_finished(client, f"many-{i}")
        assert (await client.status(f"many-{i}")).output == 3 * i + 3
    assert calls.count("fetch") == 6


async def test_signal_wakes_a_parked_instance_in_a_worker(
    durable_backend: Backend, run_worker: WorkerStarter
) -> None:
    wf = Flow("approval").wait_for_signal("approved").then(lambda p: {"ok": p}, name="done").build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "sig-1", None)
    run_worker([wf])

    async def parked() -> bool:
        return (await client.status("sig-1")).is_awaiting_signal()

    await wait_until_async(parked, what="the instance to await the signal")
    await client.send_signal("sig-1", "approved", "yes")
    await wait_finished(client, "sig-1")
    assert (await client.status("sig-1")).output == {"ok": "yes"}

    with pytest.raises(InvalidStateError):
        await client.send_signal("sig-1", "approved", "again")
    with pytest.raises(InstanceNotFoundError):
        await client.send_signal("ghost", "approved", "yes")


async def test_worker_wakes_a_delayed_instance(
    durable_backend: Backend, run_worker: WorkerStarter
) -> None:
    calls = Calls()

    def after(x: int) -> int:
        calls.add("after")
        return x

    wf = Flow("delayed").then(lambda x: x, name="before").delay("nap", 0.2).then(after).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "d-1", 7)
    run_worker([wf])

    async def waiting() -> bool:
        return (await client.status("d-1")).is_waiting()

    await wait_until_async(waiting, what="the delay to park")
    await wait_finished(client, "d-1")
    assert (await client.status("d-1")).output == 7
    assert calls.items == ["after"]


async def test_async_control_operations(durable_backend: Backend) -> None:
    wf = Flow("ctl").then(lambda x: x, name="first").delay("wait", 60).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "ctl-1", 1)
    assert (await client.pause("ctl-1", reason="hold", paused_by="me")).is_paused()
    assert (await client.unpause("ctl-1")).status == "in_progress"
    with pytest.raises(SerializationError):
        await client.send_signal("ctl-1", "go", object())
    cancelled = await client.cancel("ctl-1", reason="stop", cancelled_by="me")
    assert cancelled.is_cancelled()
    assert cancelled.reason == "stop"
    page = await client.list_instances(status="cancelled")
    assert [s.instance_id for s in page] == ["ctl-1"]
    assert page.next_cursor is None
    with pytest.raises(InstanceNotFoundError):
        await client.get_task_result("ghost", "first")


async def test_async_retry_from(durable_backend: Backend, run_worker: WorkerStarter) -> None:
    calls = Calls()
    wf = pipeline(calls)
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "rf-1", 1)
    run_worker([wf])
    await wait_finished(client, "rf-1")
    assert (await client.retry_from("rf-1", "total")).status == "in_progress"
    await wait_finished(client, "rf-1")
    assert (await client.status("rf-1")).output == 6
    assert calls.items == ["fetch", "total", "total"]


async def test_worker_run_returns_when_stopped(durable_backend: Backend) -> None:
    stop = asyncio.Event()
    wf = pipeline(Calls())
    worker = Worker("stoppable", durable_backend, poll_interval=0.02)
    running = asyncio.create_task(worker.run([wf], stop=stop))
    await asyncio.sleep(0.05)
    assert not running.done()
    stop.set()
    await asyncio.wait_for(running, timeout=5)


async def test_worker_needs_a_workflow(durable_backend: Backend) -> None:
    with pytest.raises(ValueError):
        await Worker("empty", durable_backend).run([])
    with pytest.raises(ValueError):
        Worker("bad", durable_backend, concurrency=0)


async def test_signal_timeout_in_a_worker(
    durable_backend: Backend, run_worker: WorkerStarter
) -> None:
    wf = Flow("deadline").wait_for_signal("approved", timeout=0.2).build()
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "late-1", None)
    run_worker([wf])
    await wait_finished(client, "late-1")
    status = await client.status("late-1")
    assert status.is_failed()
    assert status.error_type == "SignalTimeoutError"


async def test_async_wait_and_result(durable_backend: Backend, run_worker: WorkerStarter) -> None:
    calls = Calls()
    wf = pipeline(calls)
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(wf, "w-1", 1)
    waiting = asyncio.create_task(client.result("w-1", timeout=30, poll_interval=600))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    run_worker([wf])

    assert await asyncio.wait_for(waiting, 30) == 6
    assert (await client.wait("w-1", timeout=0)).is_completed()
    await client.submit(Flow("idle").then(lambda x: x, name="step").build(), "idle-1", 0)
    with pytest.raises(WaitTimeoutError, match=r"'idle-1' did not finish within 0\.1s"):
        await client.wait("idle-1", timeout=0.1)  # no worker knows "idle"


async def test_a_cancelled_wait_leaves_no_watch_behind(durable_backend: Backend) -> None:
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(Flow("idle").then(lambda x: x, name="step").build(), "idle-1", 0)
    waits = [asyncio.create_task(client.wait("idle-1", poll_interval=600)) for _ in range(3)]
    await asyncio.sleep(0.05)
    finished = durable_backend._finished  # type: ignore[attr-defined]
    assert finished.watching

    for waiting in waits:
        waiting.cancel()
    await asyncio.gather(*waits, return_exceptions=True)

    assert not finished.watching
