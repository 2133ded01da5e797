"""``WorkflowClient.wait`` and ``.result``: block until a worker finishes an instance.

Every test runs on memory, SQLite and PostgreSQL with workers on threads of this
process. Waits use a poll interval far longer than the test may take, so a wait that
returns in time was woken by the finish itself (NOTIFY on PostgreSQL, in-process
notifiers otherwise), not by re-reading the instance.
"""

from __future__ import annotations

import threading
import time
from typing import Any

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


class ResultInThread(threading.Thread):
    """``client.result(instance_id)`` on a thread of its own, started at once.

    After ``join``, ``value`` is what it returned and ``error`` what it raised.
    """

    def __init__(self, client: WorkflowClient, instance_id: str) -> None:
        super().__init__()
        self._client, self._instance_id = client, instance_id
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self._client.result(self._instance_id, timeout=WITHIN, poll_interval=NEVER)
        except BaseException as error:  # handed to the test thread
            self.error = error


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
    waiter = ResultInThread(client, "c-1")
    time.sleep(0.2)  # most often the waiter is blocked by now; if not, its read sees the cancel
    client.cancel("c-1", reason="customer left", cancelled_by="support")  # nobody holds it
    waiter.join(WITHIN)

    assert not waiter.is_alive()
    error = waiter.error
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
    waiters = {instance_id: ResultInThread(client, instance_id) for instance_id in ids}
    start_worker("w1", [wf], concurrency=8)
    gate.set()
    for waiter in waiters.values():
        waiter.join(WITHIN)

    results = {instance_id: waiter.value for instance_id, waiter in waiters.items()}
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
    waiter = ResultInThread(client, "rc-1")
    client.cancel("rc-1", reason="too slow")  # the worker holds it: applies at its next commit
    gate.set()
    waiter.join(WITHIN)

    assert not waiter.is_alive()
    error = waiter.error
    assert isinstance(error, InstanceCancelledError)
    assert error.reason == "too slow"
