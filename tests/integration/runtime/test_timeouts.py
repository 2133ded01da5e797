"""Timeouts are enforced for sync and async tasks, and count as failed attempts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    Flow,
    RetryPolicy,
    TaskTimeoutError,
    Workflow,
    WorkflowClient,
    get_task_context,
    run_durable_workflow,
    run_workflow,
    task,
)

from .helpers import Calls

# Generous on purpose: the point is "about one second, not three".
TIMEOUT_BOUND = 2.5


def sleepy_workflow(kind: str) -> Workflow:
    if kind == "sync":

        @task("sleepy", timeout="1s")
        def sleepy(x: int) -> int:
            time.sleep(3)
            return x

        return Flow(f"timeout-{kind}").then(sleepy).build()

    @task("sleepy", timeout="1s")
    async def sleepy_async(x: int) -> int:
        await asyncio.sleep(3)
        return x

    return Flow(f"timeout-{kind}").then(sleepy_async).build()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_in_memory_run_times_out(kind: str) -> None:
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as raised:
        run_workflow(sleepy_workflow(kind), 1)
    assert time.monotonic() - started < TIMEOUT_BOUND
    assert raised.value.task_id == "sleepy"
    assert raised.value.error_type == "TaskTimeoutError"
    assert "sleepy" in str(raised.value)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_durable_run_times_out(kind: str, durable_backend: Backend) -> None:
    started = time.monotonic()
    status = run_durable_workflow(sleepy_workflow(kind), "t-1", 1, backend=durable_backend)
    assert time.monotonic() - started < TIMEOUT_BOUND
    assert status.is_failed()
    assert status.error_type == "TaskTimeoutError"
    assert status.failed_task_id == "sleepy"
    with pytest.raises(TaskTimeoutError):
        run_workflow(
            sleepy_workflow(kind),
            1,
            instance_id="t-1",
            backend=durable_backend,
            conflict_policy="use_existing",
        )


def slow_first_attempt(kind: str, calls: Calls, timeout: float) -> Callable[..., Any]:
    if kind == "sync":

        def flaky_sync(x: int) -> int:
            context = get_task_context()
            assert context is not None
            calls.add(context.attempt)
            if context.attempt == 1:
                time.sleep(timeout * 4)
            return x + 1

        return flaky_sync

    async def flaky_async(x: int) -> int:
        context = get_task_context()
        assert context is not None
        calls.add(context.attempt)
        if context.attempt == 1:
            await asyncio.sleep(timeout * 4)
        return x + 1

    return flaky_async


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_timed_out_attempt_is_retried(kind: str, durable_backend: Backend) -> None:
    calls = Calls()
    policy = RetryPolicy(max_retries=1, initial_delay_secs=0.01)
    flaky = task("flaky", timeout=0.2, retries=policy)(slow_first_attempt(kind, calls, 0.2))
    wf = Flow(f"retry-timeout-{kind}").then(flaky).build()

    assert run_workflow(wf, 1) == 2
    assert calls.items == [1, 2]

    status = run_durable_workflow(wf, "rt-1", 1, backend=durable_backend)
    assert status.output == 2
    events = WorkflowClient(durable_backend).history("rt-1")
    failed = [e for e in events if e.kind == "task_failed"]
    assert [(e.step_key, e.attempt) for e in failed] == [("flaky", 1)]
    assert failed[0].detail is not None
    assert "TaskTimeoutError" in failed[0].detail["error"]
    retries = [e for e in events if e.kind == "retry_scheduled"]
    assert [(e.step_key, e.attempt) for e in retries] == [("flaky", 2)]


def test_timeouts_exhaust_retries_as_failed_attempts() -> None:
    calls = Calls()

    @task("always_slow", timeout=0.1, retries=RetryPolicy(max_retries=2, initial_delay_secs=0))
    async def always_slow(x: int) -> int:
        calls.add(x)
        await asyncio.sleep(2)
        return x

    with pytest.raises(TaskTimeoutError):
        run_workflow(Flow("exhaust").then(always_slow).build(), 1)
    assert len(calls.items) == 3


def test_timeout_is_not_retried_when_the_policy_excludes_it() -> None:
    calls = Calls()
    policy = RetryPolicy(max_retries=3, initial_delay_secs=0, retry_on=(ConnectionError,))

    @task("picky", timeout=0.1, retries=policy)
    async def picky(x: int) -> int:
        calls.add(x)
        await asyncio.sleep(2)
        return x

    with pytest.raises(TaskTimeoutError):
        run_workflow(Flow("picky").then(picky).build(), 1)
    assert len(calls.items) == 1
