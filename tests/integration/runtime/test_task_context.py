"""``get_task_context()``: identity of the running step and its idempotency key."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    Flow,
    LoopResult,
    RetryPolicy,
    TaskError,
    TaskExecutionContext,
    get_task_context,
    run_durable_workflow,
    run_workflow,
    task,
)

from .helpers import Calls


def current() -> TaskExecutionContext:
    context = get_task_context()
    assert context is not None, "get_task_context() returned None inside a task"
    return context


def test_no_context_outside_a_task() -> None:
    assert get_task_context() is None

    def step(x: int) -> int:
        return x

    run_workflow(Flow("outside").then(step).build(), 1)
    assert get_task_context() is None


async def test_no_context_in_async_code_outside_a_task() -> None:
    assert get_task_context() is None


def test_context_fields_in_sync_and_async_tasks(durable_backend: Backend) -> None:
    seen: dict[str, TaskExecutionContext] = {}

    @task("sync_step", timeout="5s", tags=["billing"], version="2")
    def sync_step(x: int) -> int:
        seen["sync_step"] = current()
        return x + 1

    @task("async_step")
    async def async_step(x: int) -> int:
        seen["async_step"] = current()
        return x + 1

    wf = Flow("ctx", metadata={"team": "payments"}).then(sync_step).then(async_step).build()
    assert run_durable_workflow(wf, "ctx-1", 1, backend=durable_backend).output == 3

    sync_context = seen["sync_step"]
    assert sync_context.workflow_id == "ctx"
    assert sync_context.instance_id == "ctx-1"
    assert sync_context.task_id == "sync_step"
    assert sync_context.attempt == 1
    assert sync_context.metadata.timeout_secs == 5.0
    assert sync_context.metadata.tags == ("billing",)
    assert sync_context.metadata.version == "2"
    assert sync_context.workflow_metadata == {"team": "payments"}
    async_context = seen["async_step"]
    assert async_context.task_id == "async_step"
    assert async_context.instance_id == "ctx-1"


def test_context_does_not_leak_between_concurrent_tasks() -> None:
    barrier = threading.Barrier(2, timeout=5)
    seen: dict[str, str] = {}

    def left(x: int) -> int:
        barrier.wait()
        seen["left"] = current().task_id
        return x

    def right(x: int) -> int:
        barrier.wait()
        seen["right"] = current().task_id
        return x

    async def async_left(x: int) -> int:
        await asyncio.sleep(0.02)
        seen["async_left"] = current().task_id
        return x

    async def async_right(x: int) -> int:
        await asyncio.sleep(0.01)
        seen["async_right"] = current().task_id
        return x

    wf = (
        Flow("no-leak")
        .fork()
        .branch(left)
        .branch(right)
        .branch(async_left)
        .branch(async_right)
        .join(lambda joined: sorted(joined))
        .build()
    )
    run_workflow(wf, 1)
    assert seen == {name: name for name in ("left", "right", "async_left", "async_right")}


def test_idempotency_key_is_stable_across_retries(durable_backend: Backend) -> None:
    keys = Calls()

    @task("charge", retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01))
    def charge(x: int) -> int:
        context = current()
        keys.add((context.attempt, context.idempotency_key))
        if context.attempt < 3:
            raise ConnectionError("gateway timeout")
        return x

    run_durable_workflow(Flow("pay").then(charge).build(), "pay-1", 1, backend=durable_backend)
    assert [attempt for attempt, _ in keys.items] == [1, 2, 3]
    assert len({key for _, key in keys.items}) == 1


def test_idempotency_keys_differ_between_steps_items_iterations_and_instances(
    durable_backend: Backend,
) -> None:
    keys: dict[tuple[str, str], str] = {}
    lock = threading.Lock()

    def remember(label: str) -> None:
        context = current()
        with lock:
            keys[(context.instance_id, label)] = context.idempotency_key

    def first(n: int) -> list[int]:
        remember("first")
        return list(range(n))

    def item(x: int) -> int:
        remember(f"item-{x}")
        return x

    def count(state: Any) -> LoopResult[Any]:
        iteration = state if isinstance(state, int) else 0
        remember(f"iteration-{iteration}")
        return LoopResult.again(iteration + 1) if iteration < 2 else LoopResult.done(iteration)

    wf = Flow("keys").then(first).map(item).loop(count).build()
    for instance_id in ("keys-a", "keys-b"):
        run_durable_workflow(wf, instance_id, 3, backend=durable_backend)

    labels = {"first", "item-0", "item-1", "item-2", "iteration-0", "iteration-1", "iteration-2"}
    assert {label for _, label in keys} == labels
    assert len(set(keys.values())) == len(keys) == 2 * len(labels)
    assert all(key.startswith("sayiir-") for key in keys.values())


def test_idempotency_key_is_deterministic_for_one_instance_and_step(
    durable_backend: Backend,
) -> None:
    """The same instance id and step give the same key in another run (e.g. after a crash)."""
    keys: list[str] = []

    def step(x: int) -> int:
        keys.append(current().idempotency_key)
        return x

    wf = Flow("same-key").then(step).build()
    run_durable_workflow(wf, "same", 1, backend=durable_backend)
    run_durable_workflow(
        wf, "same", 1, backend=durable_backend, conflict_policy="terminate_existing"
    )
    assert len(keys) == 2
    assert keys[0] == keys[1]


def test_separate_in_memory_runs_get_different_idempotency_keys() -> None:
    keys: list[str] = []

    def charge(order: dict[str, Any]) -> dict[str, Any]:
        keys.append(current().idempotency_key)
        return order

    wf = Flow("charge").then(charge).build()
    run_workflow(wf, {"order": 1})
    run_workflow(wf, {"order": 2})
    assert keys[0] != keys[1]


def test_an_in_memory_failure_names_the_runs_instance_id() -> None:
    seen: list[str] = []

    def charge(order: dict[str, Any]) -> dict[str, Any]:
        seen.append(current().instance_id)
        raise ValueError("card declined")

    with pytest.raises(TaskError) as raised:
        run_workflow(Flow("charge").then(charge).build(), {"order": 1})
    assert raised.value.instance_id == seen[0]
    assert repr(seen[0]) in str(raised.value)
