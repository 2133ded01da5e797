"""``WorkflowClient``: submit, status, task results, listing, history and retry_from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sayiir_core import (
    Backend,
    Flow,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidStateError,
    TaskError,
    Worker,
    WorkerHandle,
    Workflow,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
)

from .helpers import Calls, wait_until


def three_steps(calls: Calls, fail_in_b: list[bool] | None = None) -> Workflow:
    def a(x: int) -> int:
        calls.add("a")
        return x + 1

    def b(x: int) -> int:
        calls.add("b")
        if fail_in_b and fail_in_b[0]:
            raise RuntimeError("b is broken")
        return x * 10

    def c(x: int) -> int:
        calls.add("c")
        return x - 1

    return Flow("three").then(a).then(b).then(c).build()


@pytest.fixture
def client(durable_backend: Backend) -> WorkflowClient:
    return WorkflowClient(durable_backend)


@pytest.fixture
def worker_for(durable_backend: Backend) -> Iterator[list[WorkerHandle]]:
    """Handles started by a test; shut down and joined afterwards."""
    handles: list[WorkerHandle] = []
    yield handles
    for handle in handles:
        handle.shutdown()
    for handle in handles:
        handle.join(10)
        assert not handle.is_alive()


def wait_finished(client: WorkflowClient, instance_id: str, timeout: float = 10.0) -> None:
    wait_until(lambda: client.status(instance_id).is_finished(), timeout, f"{instance_id} done")


def test_submit_stores_a_pending_instance_that_a_worker_runs(
    client: WorkflowClient, durable_backend: Backend, worker_for: list[WorkerHandle]
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    submitted = client.submit(wf, "sub-1", 1)
    assert submitted.status == "in_progress"
    assert submitted.is_in_progress()
    assert submitted.instance_id == "sub-1"
    assert submitted.workflow_id == "three"
    assert client.status("sub-1").status == "in_progress"
    assert calls.items == []
    assert client.get_task_result("sub-1", "a") is None

    worker_for.append(Worker("w1", durable_backend, poll_interval=0.02).start([wf]))
    wait_finished(client, "sub-1")
    status = client.status("sub-1")
    assert status.is_completed()
    assert status.output == 19
    assert calls.items == ["a", "b", "c"]


def test_submit_respects_the_conflict_policy(durable_backend: Backend) -> None:
    wf = three_steps(Calls())
    WorkflowClient(durable_backend).submit(wf, "dup", 1)
    with pytest.raises(InstanceAlreadyExistsError):
        WorkflowClient(durable_backend).submit(wf, "dup", 2)
    existing = WorkflowClient(durable_backend, conflict_policy="use_existing").submit(wf, "dup", 3)
    assert existing.status == "in_progress"


def test_get_task_result(client: WorkflowClient, durable_backend: Backend) -> None:
    wf = Flow("partial").then(lambda x: {"n": x}, name="first").delay("wait", 60).build()
    run_durable_workflow(wf, "r-1", 5, backend=durable_backend)
    assert client.get_task_result("r-1", "first") == {"n": 5}
    assert client.get_task_result("r-1", "wait") is None
    assert client.get_task_result("r-1", "no_such_step") is None
    with pytest.raises(InstanceNotFoundError):
        client.get_task_result("ghost", "first")
    with pytest.raises(InstanceNotFoundError):
        client.status("ghost")
    with pytest.raises(InstanceNotFoundError):
        client.history("ghost")


def test_get_task_result_of_map_items_and_loop_iterations(
    client: WorkflowClient, durable_backend: Backend
) -> None:
    wf = (
        Flow("items")
        .then(lambda n: list(range(n)), name="make")
        .map(lambda x: x * x, name="square")
        .build()
    )
    assert run_durable_workflow(wf, "m-1", 3, backend=durable_backend).output == [0, 1, 4]
    assert client.get_task_result("m-1", "square[2]") == 4


def test_list_instances_filters_and_pages(client: WorkflowClient, durable_backend: Backend) -> None:
    first = Flow("first").then(lambda x: x, name="step").build()
    second = Flow("second").then(lambda x: x, name="step").build()
    for i in range(3):
        run_durable_workflow(first, f"done-{i}", i, backend=durable_backend)
    for i in range(2):
        client.submit(first, f"pending-{i}", i)
    client.submit(second, "other-0", 0)

    everything = client.list_instances()
    assert [s.instance_id for s in everything] == [
        "other-0",
        "pending-1",
        "pending-0",
        "done-2",
        "done-1",
        "done-0",
    ]
    assert everything.next_cursor is None

    pending = client.list_instances(status="in_progress")
    assert {s.instance_id for s in pending} == {"pending-0", "pending-1", "other-0"}
    assert all(s.status == "in_progress" for s in pending)
    completed_first = client.list_instances(status="completed", workflow_id="first")
    assert {s.instance_id for s in completed_first} == {"done-0", "done-1", "done-2"}
    assert [s.instance_id for s in client.list_instances(workflow_id="second")] == ["other-0"]
    assert client.list_instances(status="failed") == []

    pages: list[list[str | None]] = []
    cursor: str | None = None
    while True:
        page = client.list_instances(limit=4, cursor=cursor)
        pages.append([s.instance_id for s in page])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 2]
    assert [i for p in pages for i in p] == [s.instance_id for s in everything]

    filtered_pages: list[str | None] = []
    cursor = None
    while True:
        page = client.list_instances(workflow_id="first", limit=2, cursor=cursor)
        assert len(page) <= 2
        filtered_pages.extend(s.instance_id for s in page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert filtered_pages == ["pending-1", "pending-0", "done-2", "done-1", "done-0"]

    with pytest.raises(ValueError):
        client.list_instances(limit=0)
    with pytest.raises(ValueError):
        client.list_instances(status="nonsense")


def test_history_kinds_order_and_worker_ids(
    client: WorkflowClient, durable_backend: Backend, worker_for: list[WorkerHandle]
) -> None:
    wf = three_steps(Calls())
    client.submit(wf, "h-1", 1)
    worker_for.append(Worker("hist-worker", durable_backend, poll_interval=0.02).start([wf]))
    wait_finished(client, "h-1")

    events = client.history("h-1")
    assert [(e.kind, e.step_key) for e in events] == [
        ("started", None),
        ("task_started", "a"),
        ("task_completed", "a"),
        ("task_started", "b"),
        ("task_completed", "b"),
        ("task_started", "c"),
        ("task_completed", "c"),
        ("completed", None),
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    times = [e.at for e in events]
    assert times == sorted(times)
    assert all(e.worker_id == "hist-worker" for e in events if e.kind.startswith("task_"))
    assert events[-1].worker_id == "hist-worker"
    assert all(e.attempt == 1 for e in events if e.kind.startswith("task_"))
    completed = [e for e in events if e.kind == "task_completed"]
    assert all(e.detail is not None and e.detail["duration_ms"] >= 0 for e in completed)


def test_retry_from_reruns_the_step_and_later_ones(
    client: WorkflowClient, durable_backend: Backend
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    assert run_durable_workflow(wf, "rf-1", 1, backend=durable_backend).output == 19
    assert calls.items == ["a", "b", "c"]

    status = client.retry_from("rf-1", "b")
    assert status.status == "in_progress"
    assert status.output is None
    assert client.get_task_result("rf-1", "a") == 2
    assert client.get_task_result("rf-1", "b") is None
    assert client.get_task_result("rf-1", "c") is None

    done = resume_workflow(wf, "rf-1", durable_backend)
    assert done.output == 19
    assert calls.items == ["a", "b", "c", "b", "c"]
    kinds = [e.kind for e in client.history("rf-1")]
    assert kinds.count("completed") == 2
    assert "retried_from" in kinds


def test_retry_from_the_failed_step(client: WorkflowClient, durable_backend: Backend) -> None:
    calls = Calls()
    broken = [True]
    wf = three_steps(calls, broken)
    with pytest.raises(TaskError, match="b is broken"):
        run_workflow(wf, 1, instance_id="rf-2", backend=durable_backend)
    assert calls.items == ["a", "b"]

    broken[0] = False
    status = client.retry_from("rf-2", "b")
    assert status.status == "in_progress"
    assert status.error is None
    done = resume_workflow(wf, "rf-2", durable_backend)
    assert done.output == 19
    assert calls.items == ["a", "b", "b", "c"]


def test_retry_from_a_step_that_never_ran_is_refused(
    client: WorkflowClient, durable_backend: Backend
) -> None:
    calls = Calls()
    wf = three_steps(calls, [True])
    run_durable_workflow(wf, "rf-3", 1, backend=durable_backend)
    with pytest.raises(InvalidStateError):
        client.retry_from("rf-3", "c")
    with pytest.raises(InstanceNotFoundError):
        client.retry_from("ghost", "a")


def test_retry_from_then_a_worker_finishes(
    client: WorkflowClient, durable_backend: Backend, worker_for: list[WorkerHandle]
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    run_durable_workflow(wf, "rf-4", 1, backend=durable_backend)
    client.retry_from("rf-4", "c")
    worker_for.append(Worker("w", durable_backend, poll_interval=0.02).start([wf]))
    wait_finished(client, "rf-4")
    assert client.status("rf-4").output == 19
    assert calls.items == ["a", "b", "c", "c"]


def test_client_cancel_pause_unpause_return_statuses(
    client: WorkflowClient, durable_backend: Backend
) -> None:
    wf = Flow("ctl").then(lambda x: x, name="first").delay("wait", 60).build()
    run_durable_workflow(wf, "ctl-1", 1, backend=durable_backend)
    assert client.pause("ctl-1", reason="hold", paused_by="me").is_paused()
    assert client.unpause("ctl-1").status == "in_progress"
    cancelled = client.cancel("ctl-1", reason="done with it", cancelled_by="me")
    assert cancelled.is_cancelled()
    assert cancelled.cancelled_by == "me"
    with pytest.raises(InvalidStateError):
        client.cancel("ctl-1")
    assert client.backend is durable_backend
