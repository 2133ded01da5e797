"""Threaded workers, graceful shutdown, and real concurrency of forks and maps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from sayiir_core import (
    Backend,
    Flow,
    Workflow,
    WorkflowClient,
    run_durable_workflow,
    run_workflow,
)
from sayiir_core.backends import InstanceRecord
from sayiir_core.runtime.loop_thread import run_sync

from .conftest import HandleStarter
from .helpers import Calls, GatedWorkflow, wait_until


def finished(client: WorkflowClient, instance_id: str) -> Callable[[], bool]:
    return lambda: client.status(instance_id).is_finished()


def record_of(backend: Backend, instance_id: str) -> InstanceRecord:
    record = run_sync(backend.get_record(instance_id))
    assert record is not None
    return record


# -- fork and map concurrency ------------------------------------------------------------


def meeting_fork() -> Workflow:
    """Each branch waits for the other to start: the fork completes only if both run at once."""
    started = {"left": asyncio.Event(), "right": asyncio.Event()}

    async def meet(me: str, other: str) -> str:
        started[me].set()
        await asyncio.wait_for(started[other].wait(), timeout=5)  # fails the step if alone
        return me

    async def left(x: int) -> str:
        return await meet("left", "right")

    async def right(x: int) -> str:
        return await meet("right", "left")

    return Flow("fork").fork().branch(left).branch(right).join(lambda j: j, name="join").build()


def test_fork_branches_run_concurrently_in_memory() -> None:
    assert run_workflow(meeting_fork(), 1) == {"left": "left", "right": "right"}


def test_fork_branches_run_concurrently_durably(durable_backend: Backend) -> None:
    status = run_durable_workflow(meeting_fork(), "fork-1", 1, backend=durable_backend)
    assert status.output == {"left": "left", "right": "right"}
    client = WorkflowClient(durable_backend)
    assert client.get_task_result("fork-1", "left") == "left"
    assert client.get_task_result("fork-1", "right") == "right"


def test_sync_fork_branches_run_in_parallel_threads() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def left(x: int) -> int:
        barrier.wait()  # deadlocks (and times out) unless both branches run at once
        return 1

    def right(x: int) -> int:
        barrier.wait()
        return 2

    wf = Flow("threads").fork([left, right]).join(lambda j: j["left"] + j["right"], name="sum")
    assert run_workflow(wf.build(), 0) == 3


def counting_map(calls: Calls, limit: int | None, kind: str) -> Workflow:
    """A map whose items record how many of them run at once."""

    async def work_async(x: int) -> int:
        calls.enter()
        try:
            await asyncio.sleep(0.05)
        finally:
            calls.leave()
        return x * x

    def work_sync(x: int) -> int:
        calls.enter()
        try:
            time.sleep(0.05)
        finally:
            calls.leave()
        return x * x

    work = work_async if kind == "async" else work_sync
    make = Flow("map").then(lambda n: list(range(n)), name="make")
    return make.map(work, max_concurrency=limit, name="work").build()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_map_never_exceeds_max_concurrency(kind: str, durable_backend: Backend) -> None:
    calls = Calls()
    status = run_durable_workflow(counting_map(calls, 2, kind), "map-1", 6, backend=durable_backend)
    assert status.output == [0, 1, 4, 9, 16, 25]
    assert calls.peak == 2
    client = WorkflowClient(durable_backend)
    assert [client.get_task_result("map-1", f"work[{i}]") for i in range(6)] == [
        0,
        1,
        4,
        9,
        16,
        25,
    ]


def test_map_without_a_limit_runs_all_items_at_once() -> None:
    calls = Calls()
    assert run_workflow(counting_map(calls, None, "async"), 4) == [0, 1, 4, 9]
    assert calls.peak == 4


def test_map_keeps_input_order_when_items_finish_out_of_order() -> None:
    async def slow_for_small(x: int) -> int:
        await asyncio.sleep(0.01 * (5 - x))
        return x

    wf = Flow("order").then(lambda n: list(range(n)), name="make").map(slow_for_small).build()
    assert run_workflow(wf, 5) == [0, 1, 2, 3, 4]


# -- threaded workers --------------------------------------------------------------------


def test_worker_thread_runs_several_instances_within_its_concurrency(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    calls = Calls()

    async def step(x: int) -> int:
        calls.enter()
        try:
            await asyncio.sleep(0.1)
        finally:
            calls.leave()
        return x + 1

    wf = Flow("bounded").then(step).build()
    client = WorkflowClient(durable_backend)
    for i in range(5):
        client.submit(wf, f"b-{i}", i)
    start_worker("bounded", [wf], concurrency=2)
    for i in range(5):
        wait_until(finished(client, f"b-{i}"), what=f"b-{i}")
        assert client.status(f"b-{i}").output == i + 1
    assert calls.peak == 2


def test_two_workers_share_the_work_without_running_a_step_twice(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    calls = Calls()

    def step(x: int) -> int:
        calls.add(x)
        time.sleep(0.01)
        return x

    wf = Flow("shared").then(step).build()
    client = WorkflowClient(durable_backend)
    for i in range(10):
        client.submit(wf, f"s-{i}", i)
    start_worker("one", [wf], concurrency=2)
    start_worker("two", [wf], concurrency=2)
    for i in range(10):
        wait_until(finished(client, f"s-{i}"), what=f"s-{i}")
    assert sorted(calls.items) == list(range(10))


def test_failed_instance_in_a_worker_is_stored_as_failed(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    def broken(x: int) -> int:
        raise KeyError("missing sku")

    wf = Flow("broken").then(broken).build()
    client = WorkflowClient(durable_backend)
    client.submit(wf, "bad-1", 1)
    start_worker("w", [wf])
    wait_until(lambda: client.status("bad-1").is_finished())
    status = client.status("bad-1")
    assert status.is_failed()
    assert status.error_type == "KeyError"
    assert status.error is not None
    assert "missing sku" in status.error


def test_graceful_shutdown_finishes_the_running_step_and_releases_the_claim(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    gated = GatedWorkflow("graceful")
    wf, started, release, calls = gated.workflow, gated.started, gated.release, gated.calls
    client = WorkflowClient(durable_backend)
    client.submit(wf, "g-1", 1)
    handle = start_worker("leaving", [wf], claim_ttl=30)
    assert started.wait(5)
    handle.shutdown()
    time.sleep(0.05)
    assert handle.is_alive(), "shutdown must wait for the running step"
    release.set()
    handle.join(10)
    assert not handle.is_alive()
    assert handle.error is None

    assert calls.items == ["first"]
    assert client.get_task_result("g-1", "first") == 2
    record = record_of(durable_backend, "g-1")
    assert not record.status.is_terminal
    assert record.owner is None, "the claim must be released on shutdown"

    # Another worker takes over at once (no lease to wait for) and does not redo "first".
    start_worker("arriving", [wf], claim_ttl=30)
    wait_until(lambda: client.status("g-1").is_finished())
    assert client.status("g-1").output == 20
    assert calls.items == ["first", "second"]
    workers = {e.step_key: e.worker_id for e in client.history("g-1") if e.kind == "task_completed"}
    assert workers == {"first": "leaving", "second": "arriving"}


def test_shutdown_of_an_idle_worker_is_prompt(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    handle = start_worker("idle", [meeting_fork()], poll_interval=5.0)
    started = time.monotonic()
    handle.shutdown()
    handle.join(5)
    assert not handle.is_alive()
    assert time.monotonic() - started < 2


def test_a_failing_branch_fails_the_fork_at_once_and_cancels_its_sibling(
    durable_backend: Backend,
) -> None:
    cancelled = threading.Event()

    async def slow(x: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    def broken(x: int) -> int:
        raise ValueError("branch failed")

    wf = Flow("fork-fail").fork().branch(slow).branch(broken).join(lambda j: j, name="j").build()
    started = time.monotonic()
    status = run_durable_workflow(wf, "ff-1", 1, backend=durable_backend)
    assert time.monotonic() - started < 2
    assert status.is_failed()
    assert status.failed_task_id == "broken"
    wait_until(cancelled.is_set, within=5, what="the sibling branch to be cancelled")


def test_a_worker_with_another_definition_leaves_the_instance_to_others(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    calls = Calls()

    def first(x: int) -> int:
        calls.add("first")
        return x

    def renamed(x: int) -> int:
        calls.add("renamed")
        return x

    old = Flow("deployed").then(first).build()
    new = Flow("deployed").then(renamed).build()
    client = WorkflowClient(durable_backend)
    client.submit(old, "old-1", 1)

    # A rolling deploy: a worker with the new definition sees the old instance first.
    start_worker("new-version", [new], claim_ttl=30)
    time.sleep(0.2)  # many polls: enough for the new worker to grab it, if it would
    start_worker("old-version", [old], claim_ttl=30)
    wait_until(
        finished(client, "old-1"),
        within=2,
        what="the old-version worker to run the old instance",
    )
    assert client.status("old-1").output == 1
    assert calls.items == ["first"]
    workers = {e.worker_id for e in client.history("old-1") if e.kind == "task_completed"}
    assert workers == {"old-version"}
