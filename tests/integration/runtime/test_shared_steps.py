"""Parallel steps shared between workers through the step queue (memory, PostgreSQL).

Two workers in this process share one backend. The tests give the orchestrating worker
one slot (one instance, one shared step at a time), so it runs at most two steps at once,
and start the helper only once the orchestrator owns the instance. Where it matters the
steps wait at a ``Barrier`` until three of them run at once: one of those must be the
helper's, so where a step ran is certain, not a race.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    Flow,
    RetryPolicy,
    TaskExecutionContext,
    Worker,
    Workflow,
    WorkflowClient,
    get_task_context,
    task,
)
from sayiir_core.backends import ConflictPolicy, NewInstance, StepWrite
from sayiir_core.backends.step_queue import StepQueue, StepRef, StepResult, StepTicket
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import Status

from .conftest import HandleStarter
from .helpers import wait_until


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The backends with a step queue."""
    kind: str = request.param
    return kind


def current_context() -> TaskExecutionContext:
    context = get_task_context()
    assert context is not None, "called outside a task"
    return context


def where(name: str, seconds: float = 0.2) -> Any:
    """A branch that returns ``[name, instance, input]`` after ``seconds``."""

    @task(name)
    async def body(x: Any) -> list[Any]:
        await asyncio.sleep(seconds)
        return [name, current_context().instance_id, x]

    return body


class Barrier:
    """Steps wait here until ``parties`` of them have arrived (at most 10 s)."""

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._lock = threading.Lock()
        self._open = threading.Event()

    async def arrive(self) -> None:
        with self._lock:
            self._arrived += 1
            if self._arrived >= self._parties:
                self._open.set()
        for _ in range(1000):
            if self._open.is_set():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {self._arrived} of {self._parties} steps ran at once")


def gated(name: str, barrier: Barrier) -> Any:
    """A branch that returns ``[name, instance, input]`` once the barrier opens."""

    @task(name)
    async def body(x: Any) -> list[Any]:
        await barrier.arrive()
        return [name, current_context().instance_id, x]

    return body


def three_branch_fork(name: str, *branches: Any) -> Workflow:
    fork = Flow(name).fork()
    for branch in branches or (where("left"), where("middle"), where("right")):
        fork = fork.branch(branch)
    return fork.join(lambda results: results, name="gather").build()


def start_helper_once_claimed(
    start_worker: HandleStarter, backend: Backend, workflow: Workflow, instance_id: str
) -> None:
    """Start "helper" once "orchestrator" owns the instance, so the helper cannot take it."""

    def owned() -> bool:  # or over already: a step that fails at once ends it
        record = run_sync(backend.get_record(instance_id))
        assert record is not None
        return record.owner == "orchestrator" or record.status.is_terminal

    wait_until(owned, what="the orchestrator's claim")
    start_worker("helper", [workflow])


def completed_by(client: WorkflowClient, instance_id: str) -> dict[str, str | None]:
    history = client.history(instance_id)
    return {e.step_key or "": e.worker_id for e in history if e.kind == "task_completed"}


def test_fork_branches_run_on_two_workers_and_join_once(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    barrier = Barrier(3)
    branches = [gated(name, barrier) for name in ("left", "middle", "right")]
    workflow = three_branch_fork("spread", *branches)
    start_worker("orchestrator", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)

    client.submit(workflow, "s-1", 5)
    start_helper_once_claimed(start_worker, durable_backend, workflow, "s-1")
    wait_until(lambda: client.status("s-1").is_finished(), what="the join")

    assert client.status("s-1").output == {
        "left": ["left", "s-1", 5],
        "middle": ["middle", "s-1", 5],
        "right": ["right", "s-1", 5],
    }
    ran = completed_by(client, "s-1")
    assert {ran["left"], ran["middle"], ran["right"]} == {"orchestrator", "helper"}
    kinds = [e.kind for e in client.history("s-1")]
    assert kinds.count("task_completed") == 4  # three branches, one join
    assert kinds.count("completed") == 1


def test_a_shared_branch_is_retried_and_its_failures_recorded(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    attempts: list[int] = []

    @task("flaky", retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01))
    def flaky(x: int) -> int:
        attempts.append(current_context().attempt)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return x * 2

    workflow = three_branch_fork("retrying", where("steady", 0.5), flaky)
    start_worker("orchestrator", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)

    client.submit(workflow, "r-1", 4)
    start_helper_once_claimed(start_worker, durable_backend, workflow, "r-1")
    wait_until(lambda: client.status("r-1").is_finished(), what="the join")

    assert client.status("r-1").output == {"steady": ["steady", "r-1", 4], "flaky": 8}
    assert attempts == [1, 2, 3]
    events = [(e.kind, e.attempt) for e in client.history("r-1") if e.step_key == "flaky"]
    assert events.count(("task_failed", 1)) == 1
    assert events.count(("task_failed", 2)) == 1
    assert ("task_completed", 3) in events


def test_a_shared_branch_failing_fails_the_instance_with_its_error(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    @task("broken")
    def broken(x: int) -> int:
        raise KeyError("no such account")

    workflow = three_branch_fork("failing", where("steady", 0.5), broken)
    start_worker("orchestrator", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)

    client.submit(workflow, "f-1", 1)
    start_helper_once_claimed(start_worker, durable_backend, workflow, "f-1")
    wait_until(lambda: client.status("f-1").is_finished(), what="the failure")

    status = client.status("f-1")
    assert status.is_failed()
    assert "KeyError" in str(status.error)
    assert "no such account" in str(status.error)
    failed = [e.step_key for e in client.history("f-1") if e.kind == "task_failed"]
    assert failed == ["broken"]


def test_map_items_are_shared_and_come_back_in_input_order(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    barrier = Barrier(3)

    @task("double")
    async def double(x: int) -> list[Any]:
        await barrier.arrive()
        return [x * 2, current_context().instance_id]

    workflow = Flow("mapping").map(double).build()
    start_worker("orchestrator", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)

    client.submit(workflow, "m-1", list(range(12)))
    start_helper_once_claimed(start_worker, durable_backend, workflow, "m-1")
    wait_until(lambda: client.status("m-1").is_finished(), what="the map")

    assert client.status("m-1").output == [[2 * n, "m-1"] for n in range(12)]
    ran = completed_by(client, "m-1")
    assert {ran[f"double[{n}]"] for n in range(12)} == {"orchestrator", "helper"}


def test_cancel_reaches_a_shared_step_while_it_runs(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    started, cancelled = threading.Event(), threading.Event()

    @task("long")
    async def long(x: int) -> int:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    workflow = three_branch_fork("cancelling", where("short", 60), long)
    # One slot: "short" runs in the instance's runner, "long" as a claimed shared step.
    start_worker("only", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)
    client.submit(workflow, "c-1", 1)
    assert started.wait(10)

    client.cancel("c-1", reason="no longer needed")

    wait_until(lambda: client.status("c-1").is_cancelled(), what="the cancel")
    # The step's lease renewal finds it withdrawn and stops it.
    assert cancelled.wait(10)
    assert isinstance(durable_backend, StepQueue)
    definitions = {"cancelling": workflow.definition_hash}
    assert run_sync(durable_backend.claim_steps("probe", definitions, 1.0, 1e12, 10)) == []


def test_without_sharing_one_worker_runs_every_branch(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    workflow = three_branch_fork("alone")
    start_worker("orchestrator", [workflow], concurrency=1, share_steps=False)
    start_worker("helper", [workflow], share_steps=False)
    client = WorkflowClient(durable_backend)

    client.submit(workflow, "a-1", 2)
    wait_until(lambda: client.status("a-1").is_finished(), what="the join")

    assert len(set(completed_by(client, "a-1").values())) == 1  # whichever claimed it


def test_a_stopping_worker_runs_the_steps_its_instances_wait_for(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    started = threading.Event()

    @task("first")
    async def first(x: int) -> int:
        started.set()
        await asyncio.sleep(0.3)
        return x

    workflow = three_branch_fork("stopping", first, where("second", 0.3), where("third", 0.3))
    handle = start_worker("only", [workflow], concurrency=1)
    client = WorkflowClient(durable_backend)
    client.submit(workflow, "stop-1", 3)
    assert started.wait(10)

    handle.shutdown()
    handle.join(20)

    assert not handle.is_alive()
    for branch in ("first", "second", "third"):
        assert client.get_task_result("stop-1", branch) is not None, branch
    assert client.status("stop-1").status in ("in_progress", "running", "completed")


@pytest.mark.postgres
def test_a_shared_step_whose_output_is_too_large_fails_the_instance(
    postgres_schema: tuple[str, str],
) -> None:
    """Its outcome cannot be stored: the instance fails, instead of the step running on."""
    from sayiir_core.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema, max_payload_bytes=300)
    runs = []

    @task("grow")
    async def grow(n: int) -> str:
        runs.append(n)
        await asyncio.sleep(0.2)
        return "x" * (100 if n == 0 else 500)

    workflow = Flow("growing").map(grow).build()
    handle = Worker("only", backend, poll_interval=0.05, claim_ttl=1.0, concurrency=1).start(
        [workflow]
    )
    client = WorkflowClient(backend, owns_backend=True)  # closes it at the end
    try:
        client.submit(workflow, "big-1", [0, 1])
        wait_until(lambda: client.status("big-1").is_finished(), what="the failure")

        status = client.status("big-1")
        assert status.is_failed()
        assert status.error_type == "PayloadTooLargeError"
        assert status.failed_task_id == "grow[1]"
        assert sorted(runs) == [0, 1]  # not run again and again
    finally:
        handle.shutdown()
        handle.join(10)
        assert not handle.is_alive()
        client.close()


def test_a_new_owner_reads_back_a_shared_step_that_finished_instead_of_running_it(
    durable_backend: Backend, start_worker: HandleStarter
) -> None:
    """The owner died after checkpointing "left" and after "middle" finished on another
    worker, before checkpointing that: "middle" is now the first step the new owner
    needs, the one it would run itself were it not taking over."""
    calls: list[str] = []

    def counted(name: str) -> Any:
        @task(name)
        def body(x: int) -> list[Any]:
            calls.append(name)
            return [name, "new owner", x]

        return body

    workflow = three_branch_fork("failover", counted("left"), counted("middle"), counted("right"))
    # The dead owner: it claimed the instance (a lease long past) and shared "middle",
    # which another worker ran to the end.
    assert isinstance(durable_backend, StepQueue)
    run_sync(durable_backend.open())
    new = NewInstance(
        "fo-1", "failover", workflow.definition_hash, b"4", Status.RUNNING, 1.0, "dead", 2.0
    )
    record, _ = run_sync(durable_backend.create(new, ConflictPolicy.FAIL))
    left = StepWrite(Status.RUNNING, {}, 1.2, checkpoints=[("left", b'["left","dead",4]')])
    run_sync(durable_backend.commit("fo-1", record.claim_token, left))
    middle = StepTicket(
        StepRef("fo-1", "middle", 1), "failover", workflow.definition_hash, b"4", 3, 1.0
    )
    run_sync(durable_backend.publish_steps([middle]))
    (claim,) = run_sync(
        durable_backend.claim_steps("other", {"failover": workflow.definition_hash}, 60, 1.0, 1)
    )
    done = StepResult("other", 1.0, 1.5, output=b'["middle","other worker",4]')
    assert run_sync(durable_backend.finish_step(claim.ticket.ref, claim.token, done))

    start_worker("new-owner", [workflow])
    client = WorkflowClient(durable_backend)
    wait_until(lambda: client.status("fo-1").is_finished(), what="the takeover")

    assert client.status("fo-1").output == {
        "left": ["left", "dead", 4],
        "middle": ["middle", "other worker", 4],
        "right": ["right", "new owner", 4],
    }
    assert calls == ["right"]
    assert completed_by(client, "fo-1")["middle"] == "other"
