"""``RetryPolicy``: attempts, exception filters, back-off caps, history, durable state."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sayiir_core import (
    Backend,
    Flow,
    RetryPolicy,
    Status,
    TaskError,
    Worker,
    Workflow,
    WorkflowClient,
    get_task_context,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir_core.backends import InstanceRecord
from sayiir_core.runtime.loop_thread import run_sync

from .conftest import BackendFactory
from .helpers import Calls, wait_until


def failing_until(
    attempt_that_succeeds: int, calls: Calls, error: type[Exception]
) -> Callable[[int], int]:
    def flaky(x: int) -> int:
        context = get_task_context()
        assert context is not None
        calls.add(context.attempt)
        if context.attempt < attempt_that_succeeds:
            raise error(f"attempt {context.attempt} failed")
        return x + 1

    return flaky


def flaky_workflow(
    policy: RetryPolicy, calls: Calls, succeed_on: int, error: type[Exception] = ConnectionError
) -> Workflow:
    flaky = task("flaky", retries=policy)(failing_until(succeed_on, calls, error))
    return Flow("flaky").then(flaky).build()


def test_attempts_are_counted_from_one() -> None:
    calls = Calls()
    wf = flaky_workflow(RetryPolicy(max_retries=3, initial_delay_secs=0.01), calls, 3)
    assert run_workflow(wf, 1) == 2
    assert calls.items == [1, 2, 3]


def test_exhausted_retries_raise_the_last_error() -> None:
    calls = Calls()
    wf = flaky_workflow(RetryPolicy(max_retries=2, initial_delay_secs=0), calls, 99)
    with pytest.raises(TaskError) as raised:
        run_workflow(wf, 1)
    assert calls.items == [1, 2, 3]
    assert raised.value.error_type == "ConnectionError"
    assert "attempt 3 failed" in str(raised.value)


def test_no_policy_means_no_retry() -> None:
    calls = Calls()
    wf = Flow("no-retry").then(failing_until(2, calls, ConnectionError), name="flaky").build()
    with pytest.raises(TaskError):
        run_workflow(wf, 1)
    assert calls.items == [1]


def test_retry_on_limits_retries_to_those_types() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay_secs=0, retry_on=(ConnectionError,))

    retried = Calls()
    assert run_workflow(flaky_workflow(policy, retried, 2, ConnectionError), 1) == 2
    assert retried.items == [1, 2]

    not_retried = Calls()
    with pytest.raises(TaskError, match="ValueError"):
        run_workflow(flaky_workflow(policy, not_retried, 2, ValueError), 1)
    assert not_retried.items == [1]


def test_retry_on_matches_subclasses() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay_secs=0, retry_on=(OSError,))
    calls = Calls()
    assert run_workflow(flaky_workflow(policy, calls, 2, ConnectionRefusedError), 1) == 2
    assert calls.items == [1, 2]


def test_non_retryable_wins_over_retry_on() -> None:
    policy = RetryPolicy(
        max_retries=3,
        initial_delay_secs=0,
        retry_on=(OSError,),
        non_retryable=(ConnectionRefusedError,),
    )
    calls = Calls()
    with pytest.raises(TaskError, match="ConnectionRefusedError"):
        run_workflow(flaky_workflow(policy, calls, 2, ConnectionRefusedError), 1)
    assert calls.items == [1]

    other = Calls()
    assert run_workflow(flaky_workflow(policy, other, 2, ConnectionResetError), 1) == 2
    assert other.items == [1, 2]


def test_max_delay_secs_caps_the_back_off(durable_backend: Backend) -> None:
    # Uncapped, the second retry would wait 20 s; the test would time out.
    policy = RetryPolicy(
        max_retries=3, initial_delay_secs=10.0, backoff_multiplier=2.0, max_delay_secs=0.05
    )
    calls = Calls()
    started = time.monotonic()
    status = run_durable_workflow(
        flaky_workflow(policy, calls, 3), "capped", 1, backend=durable_backend
    )
    assert status.output == 2
    assert time.monotonic() - started < 5
    events = WorkflowClient(durable_backend).history("capped")
    scheduled = [e for e in events if e.kind == "retry_scheduled"]
    assert len(scheduled) == 2
    for event in scheduled:
        assert event.detail is not None
        assert event.detail["due"] - event.at == pytest.approx(0.05, abs=0.02)


def test_history_shows_failures_and_scheduled_retries(durable_backend: Backend) -> None:
    calls = Calls()
    policy = RetryPolicy(max_retries=3, initial_delay_secs=0.01, backoff_multiplier=1.0)
    run_durable_workflow(flaky_workflow(policy, calls, 3), "hist", 1, backend=durable_backend)
    events = WorkflowClient(durable_backend).history("hist")
    flaky_events = [(e.kind, e.attempt) for e in events if e.step_key == "flaky"]
    assert flaky_events == [
        ("task_started", 1),
        ("task_failed", 1),
        ("retry_scheduled", 2),
        ("task_started", 2),
        ("task_failed", 2),
        ("retry_scheduled", 3),
        ("task_started", 3),
        ("task_completed", 3),
    ]
    failed = next(e for e in events if e.kind == "task_failed")
    assert failed.detail is not None
    assert "ConnectionError: attempt 1 failed" in failed.detail["error"]
    assert "Traceback" in failed.detail["traceback"]


def test_retry_state_survives_a_restart_during_the_back_off(
    open_backend: BackendFactory,
) -> None:
    """A worker parks a long back-off; a new process resumes with the stored attempt."""
    calls = Calls()
    started_at: list[float] = []
    policy = RetryPolicy(max_retries=3, initial_delay_secs=0.6)

    @task("flaky", retries=policy)
    def flaky(x: int) -> int:
        context = get_task_context()
        assert context is not None
        calls.add(context.attempt)
        started_at.append(time.time())
        if context.attempt == 1:
            raise ConnectionError("first attempt fails")
        return x + 1

    wf = Flow("durable-retry").then(flaky).build()
    first = open_backend()
    WorkflowClient(first).submit(wf, "retry-1", 1)
    handle = Worker("w1", first, poll_interval=0.05, claim_ttl=5).start([wf])
    try:
        wait_until(
            lambda: WorkflowClient(first).status("retry-1").status == "waiting",
            what="the worker to park the back-off",
        )
    finally:
        handle.shutdown()
        handle.join(5)
    assert calls.items == [1]

    # "Restart": forget the worker and its engine, read the same storage afresh.
    second = open_backend()
    record = run_sync(_record(second, "retry-1"))
    assert record.status is Status.WAITING
    assert dict(record.control["attempts"]) == {"flaky": 1}
    due = record.control["retry_at"]["flaky"]
    assert record.wake_at == pytest.approx(due)
    assert due - started_at[0] == pytest.approx(0.6, abs=0.2)

    status = resume_workflow(wf, "retry-1", second)
    assert status.output == 2
    assert calls.items == [1, 2]
    assert started_at[1] >= due - 0.01


async def _record(backend: Backend, instance_id: str) -> InstanceRecord:
    await backend.open()
    record = await backend.get_record(instance_id)
    assert record is not None
    return record
