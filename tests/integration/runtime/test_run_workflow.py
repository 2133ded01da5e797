"""``run_workflow`` and ``run_durable_workflow``: outputs, typed errors, pydantic, conflicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from sayiir_core import (
    Backend,
    Flow,
    InstanceAlreadyExistsError,
    RetryPolicy,
    SerializationError,
    TaskError,
    TaskTimeoutError,
    Workflow,
    WorkflowClient,
    WorkflowError,
    WorkflowStatus,
    run_durable_workflow,
    run_workflow,
    task,
)

from .helpers import Calls


class Order(BaseModel):
    sku: str
    quantity: int


class Receipt(BaseModel):
    sku: str
    total: float


def add_one(x: int) -> int:
    return x + 1


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


def arithmetic() -> Workflow:
    return Flow("arithmetic").then(add_one).then(double).then(lambda x: x - 3).build()


def failing_charge() -> Workflow:
    def charge(order: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("card declined")

    def validate(order: dict[str, Any]) -> dict[str, Any]:
        return {**order, "valid": True}

    return Flow("payments").then(validate).then(charge).build()


# -- in-memory runs ----------------------------------------------------------------------


def test_in_memory_run_returns_the_output() -> None:
    assert run_workflow(arithmetic(), 4) == 7


def test_in_memory_run_of_composite_steps() -> None:
    def items(n: int) -> list[int]:
        return list(range(n))

    async def square(x: int) -> int:
        return x * x

    def left(values: list[int]) -> int:
        return sum(values)

    def right(values: list[int]) -> int:
        return len(values)

    def combine(joined: dict[str, int]) -> dict[str, int]:
        return joined

    wf = (
        Flow("composite")
        .then(items)
        .map(square, max_concurrency=2)
        .fork()
        .branch(left)
        .branch(right)
        .join(combine)
        .build()
    )
    assert run_workflow(wf, 4) == {"left": 0 + 1 + 4 + 9, "right": 4}


def test_task_error_keeps_the_tasks_exception_type_and_message() -> None:
    with pytest.raises(TaskError) as raised:
        run_workflow(failing_charge(), {"id": 1})
    error = raised.value
    assert type(error) is TaskError
    assert error.error_type == "ValueError"
    assert error.task_id == "charge"
    assert "ValueError: card declined" in str(error)


@pytest.mark.parametrize(
    ("bad_output", "type_name"),
    [(object(), "object"), ({1, 2}, "set")],
    ids=["object", "set"],
)
def test_non_json_output_fails_with_serialization_error_naming_the_task(
    bad_output: object, type_name: str
) -> None:
    def produce(_: int) -> object:
        return bad_output

    wf = Flow("bad-output").then(add_one).then(produce).build()
    with pytest.raises(SerializationError) as raised:
        run_workflow(wf, 1)
    assert raised.value.task_id == "produce"
    assert "'produce'" in str(raised.value)
    assert type_name in str(raised.value)


def test_pydantic_input_is_validated_and_output_dumped() -> None:
    received: list[object] = []

    def make_order(_: object) -> dict[str, Any]:
        return {"sku": "A1", "quantity": "3"}  # the model coerces "3" -> 3

    def price(order: Order) -> Receipt:
        received.append(order)
        return Receipt(sku=order.sku, total=order.quantity * 2.5)

    def describe(receipt: dict[str, Any]) -> dict[str, Any]:
        received.append(receipt)
        return receipt

    wf = Flow("pydantic").then(make_order).then(price).then(describe).build()
    assert run_workflow(wf, None) == {"sku": "A1", "total": 7.5}
    assert received[0] == Order(sku="A1", quantity=3)
    assert type(received[1]) is dict


def test_pydantic_model_output_is_the_workflow_output_as_a_dict() -> None:
    def price(order: Order) -> Receipt:
        return Receipt(sku=order.sku, total=1.0)

    wf = Flow("model-output").then(price).build()
    assert run_workflow(wf, {"sku": "B2", "quantity": 1}) == {"sku": "B2", "total": 1.0}


def test_invalid_pydantic_input_fails_without_retries(durable_backend: Backend) -> None:
    calls = Calls()

    @task(retries=RetryPolicy(max_retries=3, initial_delay_secs=0.01))
    def price_checked(order: Order) -> dict[str, Any]:
        calls.add(order)
        return {}

    wf = Flow("invalid-input").then(price_checked).build()
    with pytest.raises(TaskError) as raised:
        run_workflow(wf, {"sku": "A1"})
    assert raised.value.error_type == "ValidationError"
    assert "price_checked" in str(raised.value)
    assert "quantity" in str(raised.value)

    status = run_durable_workflow(wf, "invalid-1", {"sku": "A1"}, backend=durable_backend)
    assert status.is_failed()
    kinds = [event.kind for event in WorkflowClient(durable_backend).history("invalid-1")]
    assert kinds.count("task_failed") == 1
    assert "retry_scheduled" not in kinds
    assert calls.items == []


# -- durable runs ------------------------------------------------------------------------


def test_run_workflow_with_instance_id_checkpoints_every_step(durable_backend: Backend) -> None:
    wf = arithmetic()
    assert run_workflow(wf, 4, instance_id="arith-1", backend=durable_backend) == 7

    client = WorkflowClient(durable_backend)
    assert client.status("arith-1").is_completed()
    assert client.get_task_result("arith-1", "add_one") == 5
    assert client.get_task_result("arith-1", "double") == 10
    assert client.get_task_result("arith-1", "lambda_0") == 7


def test_durable_task_error_is_typed_and_stored(durable_backend: Backend) -> None:
    with pytest.raises(TaskError) as raised:
        run_workflow(failing_charge(), {"id": 1}, instance_id="pay-1", backend=durable_backend)
    assert raised.value.error_type == "ValueError"
    assert raised.value.instance_id == "pay-1"
    assert "ValueError: card declined" in str(raised.value)

    status = WorkflowClient(durable_backend).status("pay-1")
    assert status.is_failed()
    assert (status.error or "").startswith("ValueError: card declined\n\nTraceback")
    assert status.error_type == "ValueError"
    assert status.failed_task_id == "charge"


def test_durable_serialization_error_is_typed(durable_backend: Backend) -> None:
    wf = Flow("bad-output").then(lambda _: {1, 2}, name="produce").build()
    with pytest.raises(SerializationError, match="produce"):
        run_workflow(wf, 1, instance_id="ser-1", backend=durable_backend)


def test_run_durable_workflow_returns_a_status(durable_backend: Backend) -> None:
    completed = run_durable_workflow(arithmetic(), "ok-1", 4, backend=durable_backend)
    assert isinstance(completed, WorkflowStatus)
    assert completed.status == "completed"
    assert completed.output == 7
    assert completed.instance_id == "ok-1"
    assert completed.workflow_id == "arithmetic"
    assert completed.is_completed()
    assert completed.is_finished()
    assert not completed.is_failed()
    assert not completed.is_cancelled()
    assert not completed.is_paused()
    assert not completed.is_in_progress()
    assert completed.error is None

    failed = run_durable_workflow(failing_charge(), "bad-1", {}, backend=durable_backend)
    assert failed.is_failed()
    assert not failed.is_completed()
    assert not failed.is_in_progress()
    assert failed.output is None
    assert (failed.error or "").startswith("ValueError: card declined\n\nTraceback")


def test_run_durable_workflow_defaults_to_an_in_memory_backend() -> None:
    assert run_durable_workflow(arithmetic(), "no-backend", 4).output == 7


def test_timeout_error_is_a_task_error() -> None:
    # The tree promised in errors.py; the timeout tests check the behaviour.
    assert issubclass(TaskTimeoutError, TaskError)
    assert issubclass(SerializationError, TaskError)
    assert issubclass(TaskError, WorkflowError)
    assert issubclass(WorkflowError, RuntimeError)


# -- conflict policies -------------------------------------------------------------------


def counted_workflow(calls: Calls) -> Workflow:
    def record(x: int) -> int:
        calls.add(x)
        return x * 10

    return Flow("counted").then(record).build()


def test_conflict_policy_fail_is_the_default(durable_backend: Backend) -> None:
    calls = Calls()
    wf = counted_workflow(calls)
    run_durable_workflow(wf, "dup", 1, backend=durable_backend)
    with pytest.raises(InstanceAlreadyExistsError, match="dup"):
        run_durable_workflow(wf, "dup", 2, backend=durable_backend)
    with pytest.raises(InstanceAlreadyExistsError):
        run_workflow(wf, 2, instance_id="dup", backend=durable_backend, conflict_policy="fail")
    assert calls.items == [1]


def test_conflict_policy_use_existing_returns_the_existing_instance(
    durable_backend: Backend,
) -> None:
    calls = Calls()
    wf = counted_workflow(calls)
    run_durable_workflow(wf, "dup", 1, backend=durable_backend)
    status = run_durable_workflow(
        wf, "dup", 2, backend=durable_backend, conflict_policy="use_existing"
    )
    assert status.is_completed()
    assert status.output == 10
    assert (
        run_workflow(
            wf, 3, instance_id="dup", backend=durable_backend, conflict_policy="use_existing"
        )
        == 10
    )
    assert calls.items == [1]


def test_conflict_policy_terminate_existing_replaces_the_instance(
    durable_backend: Backend,
) -> None:
    calls = Calls()
    wf = counted_workflow(calls)
    run_durable_workflow(wf, "dup", 1, backend=durable_backend)
    status = run_durable_workflow(
        wf, "dup", 2, backend=durable_backend, conflict_policy="terminate_existing"
    )
    assert status.is_completed()
    assert status.output == 20
    assert calls.items == [1, 2]
    client = WorkflowClient(durable_backend)
    assert client.get_task_result("dup", "record") == 20
    assert [s.instance_id for s in client.list_instances()] == ["dup"]


def test_unknown_conflict_policy_is_a_value_error(durable_backend: Backend) -> None:
    wf = arithmetic()
    with pytest.raises(ValueError, match="conflict_policy"):
        run_durable_workflow(wf, "x", 1, backend=durable_backend, conflict_policy="replace")
    with pytest.raises(ValueError, match="conflict_policy"):
        run_workflow(wf, 1, instance_id="x", backend=durable_backend, conflict_policy="nope")
    with pytest.raises(ValueError, match="conflict_policy"):
        WorkflowClient(durable_backend, conflict_policy="nope")
    assert WorkflowClient(durable_backend).list_instances() == []


# -- more shapes and edges ---------------------------------------------------------------


def test_non_json_workflow_input_is_a_serialization_error(durable_backend: Backend) -> None:
    wf = arithmetic()
    with pytest.raises(SerializationError, match="input"):
        run_workflow(wf, object())
    with pytest.raises(SerializationError, match="in-1"):
        run_durable_workflow(wf, "in-1", {1, 2}, backend=durable_backend)
    assert WorkflowClient(durable_backend).list_instances() == []


def test_pydantic_model_as_workflow_input(durable_backend: Backend) -> None:
    def price(order: Order) -> Receipt:
        return Receipt(sku=order.sku, total=order.quantity * 1.5)

    wf = Flow("model-input").then(price).build()
    order = Order(sku="C3", quantity=2)
    assert run_workflow(wf, order) == {"sku": "C3", "total": 3.0}
    status = run_durable_workflow(wf, "model-1", order, backend=durable_backend)
    assert status.output == {"sku": "C3", "total": 3.0}


def test_child_flow_steps_are_checkpointed(durable_backend: Backend) -> None:
    child = Flow("child").then(add_one).then(double).build()
    parent = (
        Flow("parent")
        .then(lambda x: x + 100, name="prepare")
        .then_flow(child)
        .then(lambda x: -x, name="negate")
        .build()
    )
    assert run_workflow(parent, 1) == -204
    assert run_durable_workflow(parent, "child-1", 1, backend=durable_backend).output == -204
    client = WorkflowClient(durable_backend)
    assert client.get_task_result("child-1", "add_one") == 102
    assert client.get_task_result("child-1", "double") == 204


def test_on_event_reports_each_durable_event(durable_backend: Backend) -> None:
    seen: list[tuple[str, str, str | None]] = []
    run_durable_workflow(
        arithmetic(),
        "events-1",
        4,
        backend=durable_backend,
        on_event=lambda instance_id, event: seen.append((instance_id, event.kind, event.step_key)),
    )
    assert ("events-1", "task_completed", "double") in seen
    assert seen[-1] == ("events-1", "completed", None)
    stored = [
        (e.kind, e.step_key)
        for e in WorkflowClient(durable_backend).history("events-1")
        if e.kind != "started"
    ]
    assert [(kind, key) for _, kind, key in seen] == stored


def test_a_timeout_error_raised_by_the_task_is_an_ordinary_task_error() -> None:
    calls = Calls()

    # No timeout declared: the task's own TimeoutError (a socket or HTTP client timing
    # out, say) is an ordinary failure, retried by retry_on=(OSError,) like any OSError.
    @task("fetch", retries=RetryPolicy(max_retries=1, initial_delay_secs=0, retry_on=(OSError,)))
    def fetch(x: int) -> int:
        calls.add(x)
        raise TimeoutError("upstream did not answer")

    with pytest.raises(TaskError) as raised:
        run_workflow(Flow("upstream").then(fetch).build(), 1)
    assert not isinstance(raised.value, TaskTimeoutError)
    assert raised.value.error_type == "TimeoutError"
    assert "upstream did not answer" in str(raised.value)
    assert len(calls.items) == 2


def test_the_sync_api_inside_an_async_task_fails_the_task_with_advice(
    durable_backend: Backend,
) -> None:
    async def peek(x: int) -> int:
        WorkflowClient(durable_backend).list_instances()  # blocking call on the loop
        return x

    with pytest.raises(TaskError, match="AsyncWorkflowClient"):
        run_workflow(Flow("peek").then(peek).build(), 1)


async def test_the_sync_api_works_from_a_thread_running_its_own_loop() -> None:
    # Blocking calls from async code are the caller's choice; they must not deadlock.
    assert run_workflow(arithmetic(), 4) == 7
