"""``WorkflowClient.wait`` and ``.result``: block until a worker finishes an instance.

Every test runs on memory, SQLite and PostgreSQL with workers on threads of this
process. Waits use a poll interval far longer than the test may take, so a wait that
returns in time was woken by the finish itself (NOTIFY on PostgreSQL, in-process
notifiers otherwise), not by re-reading the instance.
"""

from __future__ import annotations

import threading
import time

import pytest

from sayiir_core import (
    Backend,
    Flow,
    InstanceCancelledError,
    InstanceNotFoundError,
    TaskError,
    WaitTimeoutError,
    WorkflowClient,
    WorkflowError,
    task,
)

from .conftest import HandleStarter
from .helpers import wait_until

NEVER = 600.0  # a poll interval no test lives to see
WITHIN = 30.0


@pytest.fixture
def client(durable_backend: Backend) -> WorkflowClient:
    return WorkflowClient(durable_backend)


def gated_flow(gate: threading.Event, name: str = "gated") -> Flow:
    def hold(x: int) -> int:
        if not gate.wait(WITHIN):
            raise RuntimeError("the test never opened the gate")
        return x + 1

    return Flow(name).then(hold).then(lambda x: x * 10, name="times_ten")


def test_result_returns_the_output_once_a_worker_finishes(
    client: WorkflowClient, start_worker: HandleStarter
) -> None:
    gate = threading.Event()
    wf = gated_flow(gate).build()
    client.submit(wf, "r-1", 4)
    start_worker("w1", [wf])

    with pytest.raises(WaitTimeoutError, match=r"'r-1' did not finish within 0.2s") as caught:
        client.wait("r-1", timeout=0.2, poll_interval=NEVER)
    assert isinstance(caught.value, TimeoutError)
    assert client.status("r-1").is_in_progress()  # a timed-out wait changes nothing

    gate.set()
    assert client.result("r-1", timeout=WITHIN, poll_interval=NEVER) == 50
    status = client.wait("r-1", timeout=0)  # already finished: no waiting at all
    assert (status.status, status.output) == ("completed", 50)


def test_result_of_a_failed_instance_raises_the_task_error(
    client: WorkflowClient, start_worker: HandleStarter
) -> None:
    @task(retries=0)
    def broken(x: int) -> int:
        raise ValueError(f"cannot take {x}")

    wf = Flow("broken").then(broken).build()
    client.submit(wf, "f-1", 7)
    start_worker("w1", [wf])

    with pytest.raises(TaskError, match="cannot take 7") as caught:
        client.result("f-1", timeout=WITHIN, poll_interval=NEVER)
    assert (caught.value.error_type, caught.value.task_id) == ("ValueError", "broken")
    assert client.wait("f-1", timeout=0).is_failed()


def test_a_cancel_ends_the_wait_and_result_says_who_cancelled(client: WorkflowClient) -> None:
    wf = Flow("cancelled").then(lambda x: x, name="never_runs").build()
    client.submit(wf, "c-1", 1)  # no worker: it stays pending until cancelled
    waiting: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            client.result("c-1", timeout=WITHIN, poll_interval=NEVER)
        except BaseException as error:  # handed to the test thread
            waiting.append(error)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.2)  # most often the waiter is blocked by now; if not, its read sees the cancel
    client.cancel("c-1", reason="customer left", cancelled_by="support")  # nobody holds it
    waiter.join(WITHIN)

    assert not waiter.is_alive()
    [error] = waiting
    assert isinstance(error, InstanceCancelledError)
    assert str(error) == "instance 'c-1' was cancelled by 'support': customer left"
    assert (error.reason, error.cancelled_by) == ("customer left", "support")


def test_many_waiters_on_many_instances_each_get_their_own_result(
    client: WorkflowClient, start_worker: HandleStarter
) -> None:
    gate = threading.Event()
    wf = gated_flow(gate, "many").build()
    ids = [f"m-{n}" for n in range(6)]
    for n, instance_id in enumerate(ids):
        client.submit(wf, instance_id, n)
    results: dict[str, int] = {}

    def wait_for(instance_id: str) -> None:
        results[instance_id] = client.result(instance_id, timeout=WITHIN, poll_interval=NEVER)

    waiters = [threading.Thread(target=wait_for, args=(i,)) for i in ids]
    for waiter in waiters:
        waiter.start()
    start_worker("w1", [wf], concurrency=8)
    gate.set()
    for waiter in waiters:
        waiter.join(WITHIN)

    assert results == {instance_id: (n + 1) * 10 for n, instance_id in enumerate(ids)}


def test_waiting_for_an_unknown_instance_or_with_bad_arguments_is_a_clear_error(
    client: WorkflowClient,
) -> None:
    with pytest.raises(InstanceNotFoundError, match="nope"):
        client.wait("nope", timeout=1)
    with pytest.raises(InstanceNotFoundError, match="nope"):
        client.result("nope")
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        client.wait("nope", timeout=-1)
    with pytest.raises(ValueError, match="poll_interval must be > 0"):
        client.result("nope", poll_interval=0)
    assert issubclass(WaitTimeoutError, WorkflowError)
    assert issubclass(InstanceCancelledError, WorkflowError)


def test_a_cancel_of_a_running_instance_ends_the_wait_at_its_next_checkpoint(
    client: WorkflowClient, start_worker: HandleStarter
) -> None:
    gate = threading.Event()
    wf = gated_flow(gate, "running").build()
    client.submit(wf, "rc-1", 1)
    start_worker("w1", [wf])
    wait_until(lambda: client.status("rc-1").status == "running", WITHIN, "the claim")
    outcome: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            client.result("rc-1", timeout=WITHIN, poll_interval=NEVER)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    client.cancel("rc-1", reason="too slow")  # the worker holds it: applies at its next commit
    gate.set()
    waiter.join(WITHIN)

    assert not waiter.is_alive()
    [error] = outcome
    assert isinstance(error, InstanceCancelledError)
    assert error.reason == "too slow"
