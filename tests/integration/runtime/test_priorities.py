"""Priorities 1-5: a worker claims the instance whose next step is most urgent first."""

from __future__ import annotations

from sayiir_core import Backend, Flow, Worker, WorkflowClient, task
from sayiir_core.runtime.loop_thread import run_sync

from .helpers import Calls, wait_until


def test_a_worker_claims_the_most_urgent_instance_first(durable_backend: Backend) -> None:
    order = Calls()

    @task("routine", priority=5)
    def routine(x: int) -> int:
        order.items.append(("routine", x))
        return x

    @task("urgent", priority=1)
    def urgent(x: int) -> int:
        order.items.append(("urgent", x))
        return x

    routine_flow = Flow("routine").then(routine).build()
    urgent_flow = Flow("urgent").then(urgent).build()
    client = WorkflowClient(durable_backend)
    for n in range(3):
        client.submit(routine_flow, f"routine-{n}", n)
    client.submit(urgent_flow, "urgent-0", 0)  # submitted last

    urgent_record = run_sync(durable_backend.get_record("urgent-0"))
    routine_record = run_sync(durable_backend.get_record("routine-0"))
    assert urgent_record is not None
    assert urgent_record.priority == 1
    assert routine_record is not None
    assert routine_record.priority == 5

    handle = Worker("w", durable_backend, poll_interval=0.05, concurrency=1).start(
        [routine_flow, urgent_flow]
    )
    try:
        wait_until(lambda: len(order.items) == 4)
    finally:
        handle.shutdown()
        handle.join()
    assert order.items[0] == ("urgent", 0)
