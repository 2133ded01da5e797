"""Cancel, pause/unpause and resuming with a changed definition."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    DefinitionMismatchError,
    Flow,
    InMemoryBackend,
    InstanceNotFoundError,
    InvalidStateError,
    RetryPolicy,
    WorkflowClient,
    WorkflowStatus,
    cancel_workflow,
    get_task_context,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    task,
    unpause_workflow,
)

from .helpers import Calls, GatedWorkflow, wait_until


def in_background(fn: Any, *args: Any, **kwargs: Any) -> tuple[ThreadPoolExecutor, Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(fn, *args, **kwargs)


def test_cancel_reaches_a_running_async_task(durable_backend: Backend) -> None:
    started = threading.Event()
    cancelled = threading.Event()
    calls = Calls()

    async def long_call(x: int) -> int:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    def after(x: int) -> int:
        calls.add(x)
        return x

    wf = Flow("cancellable").then(long_call).then(after).build()
    pool, run = in_background(run_durable_workflow, wf, "c-1", 1, backend=durable_backend)
    try:
        assert started.wait(5)
        cancel_workflow("c-1", durable_backend, reason="customer asked", cancelled_by="ops@shop")
        status: WorkflowStatus = run.result(timeout=10)
    finally:
        pool.shutdown(wait=False)
    assert cancelled.wait(5), "the running async task never saw CancelledError"
    assert status.is_cancelled()
    assert status.status == "cancelled"
    assert not status.is_in_progress()
    assert status.reason == "customer asked"
    assert status.cancelled_by == "ops@shop"
    assert calls.items == []

    stored = WorkflowClient(durable_backend).status("c-1")
    assert stored.is_cancelled()
    assert stored.reason == "customer asked"
    assert stored.cancelled_by == "ops@shop"
    assert "cancelled" in [e.kind for e in WorkflowClient(durable_backend).history("c-1")]
    # Resuming a cancelled instance does nothing.
    assert resume_workflow(wf, "c-1", durable_backend).is_cancelled()
    assert calls.items == []


def test_cancel_of_a_parked_instance_is_immediate(durable_backend: Backend) -> None:
    wf = Flow("parked").then(lambda x: x, name="first").delay("wait", 60).build()
    assert run_durable_workflow(wf, "p-1", 1, backend=durable_backend).is_waiting()
    cancel_workflow("p-1", durable_backend, reason="not needed")
    status = WorkflowClient(durable_backend).status("p-1")
    assert status.is_cancelled()
    assert status.reason == "not needed"


def test_cancel_of_a_finished_instance_is_an_invalid_state(durable_backend: Backend) -> None:
    wf = Flow("quick").then(lambda x: x, name="only").build()
    run_durable_workflow(wf, "f-1", 1, backend=durable_backend)
    with pytest.raises(InvalidStateError):
        cancel_workflow("f-1", durable_backend)
    with pytest.raises(InvalidStateError):
        pause_workflow("f-1", durable_backend)
    with pytest.raises(InstanceNotFoundError):
        cancel_workflow("ghost", durable_backend)


def test_pause_unpause_resume(durable_backend: Backend) -> None:
    gated = GatedWorkflow("pausable")
    wf, started, release, calls = gated.workflow, gated.started, gated.release, gated.calls
    pool, run = in_background(run_durable_workflow, wf, "pz-1", 1, backend=durable_backend)
    try:
        assert started.wait(5)
        pause_workflow("pz-1", durable_backend, reason="maintenance", paused_by="ops")
        release.set()
        status: WorkflowStatus = run.result(timeout=10)
    finally:
        release.set()
        pool.shutdown(wait=False)
    assert status.is_paused()
    assert status.is_in_progress()
    assert status.paused_by == "ops"
    assert status.reason == "maintenance"
    # The running step finished and was checkpointed; the next one did not start.
    client = WorkflowClient(durable_backend)
    assert client.get_task_result("pz-1", "first") == 2
    assert calls.items == ["first"]

    # Paused stays paused until unpaused, even through resume.
    assert resume_workflow(wf, "pz-1", durable_backend).is_paused()
    assert calls.items == ["first"]

    unpause_workflow("pz-1", durable_backend)
    assert not client.status("pz-1").is_paused()
    done = resume_workflow(wf, "pz-1", durable_backend)
    assert done.is_completed()
    assert done.output == 20
    assert calls.items == ["first", "second"]
    kinds = [e.kind for e in client.history("pz-1")]
    assert kinds.index("paused") < kinds.index("unpaused") < kinds.index("completed")


def test_pause_of_a_parked_instance_then_unpause(durable_backend: Backend) -> None:
    wf = Flow("pause-parked").then(lambda x: x, name="first").wait_for_signal("go").build()
    assert run_durable_workflow(wf, "pp-1", 1, backend=durable_backend).is_awaiting_signal()
    pause_workflow("pp-1", durable_backend)
    client = WorkflowClient(durable_backend)
    assert client.status("pp-1").is_paused()
    client.send_signal("pp-1", "go", "now")
    assert resume_workflow(wf, "pp-1", durable_backend).is_paused()
    unpause_workflow("pp-1", durable_backend)
    assert resume_workflow(wf, "pp-1", durable_backend).output == "now"


def test_unpause_of_a_running_instance_is_an_invalid_state(durable_backend: Backend) -> None:
    wf = Flow("not-paused").then(lambda x: x, name="first").delay("wait", 60).build()
    run_durable_workflow(wf, "np-1", 1, backend=durable_backend)
    with pytest.raises(InvalidStateError):
        unpause_workflow("np-1", durable_backend)


def test_resume_with_a_changed_definition(durable_backend: Backend) -> None:
    calls = Calls()

    def first(x: int) -> int:
        calls.add("first")
        return x + 1

    def second(x: int) -> int:
        calls.add("second")
        return x * 10

    def replacement(x: int) -> int:
        calls.add("replacement")
        return -x

    original = Flow("evolving").then(first).delay("wait", 0.05).then(second).build()
    changed = Flow("evolving").then(first).delay("wait", 0.05).then(replacement).build()
    assert original.definition_hash != changed.definition_hash

    assert run_durable_workflow(original, "ev-1", 1, backend=durable_backend).is_waiting()
    with pytest.raises(DefinitionMismatchError):
        resume_workflow(changed, "ev-1", durable_backend)
    assert WorkflowClient(durable_backend).status("ev-1").is_waiting()

    time.sleep(0.06)
    status = resume_workflow(changed, "ev-1", durable_backend, allow_definition_change=True)
    assert status.is_completed()
    assert status.output == -2
    assert calls.items == ["first", "replacement"]


def test_resume_with_another_workflow_is_a_mismatch(durable_backend: Backend) -> None:
    wf = Flow("one").then(lambda x: x, name="first").delay("wait", 60).build()
    other = Flow("two").then(lambda x: x, name="first").delay("wait", 60).build()
    run_durable_workflow(wf, "w-1", 1, backend=durable_backend)
    with pytest.raises(DefinitionMismatchError, match="one"):
        resume_workflow(other, "w-1", durable_backend)


def test_resume_of_an_unknown_instance_is_not_found(durable_backend: Backend) -> None:
    wf = Flow("nothing").then(lambda x: x, name="first").build()
    with pytest.raises(InstanceNotFoundError):
        resume_workflow(wf, "ghost", durable_backend)


def test_cancel_during_an_in_process_retry_back_off_is_prompt() -> None:
    # The runner's waiting is the same on every backend: one is enough (the test is slow).
    backend = InMemoryBackend()
    failed = threading.Event()
    attempts = Calls()

    @task("flaky", retries=RetryPolicy(max_retries=2, initial_delay_secs=3.0))
    def flaky(x: int) -> int:
        context = get_task_context()
        assert context is not None
        attempts.add(context.attempt)
        if context.attempt == 1:
            failed.set()
            raise ConnectionError("gateway down")
        return x

    wf = Flow("backoff").then(flaky).build()
    pool, run = in_background(run_durable_workflow, wf, "bo-1", 1, backend=backend)
    try:
        assert failed.wait(5)
        client = WorkflowClient(backend)
        wait_until(lambda: client.status("bo-1").is_waiting(), what="the back-off to start")
        cancel_workflow("bo-1", backend, reason="give up")
        cancelled_at = time.monotonic()
        status: WorkflowStatus = run.result(timeout=10)
        waited = time.monotonic() - cancelled_at
    finally:
        pool.shutdown(wait=False)
    assert status.is_cancelled()
    assert attempts.items == [1]
    # The runner looks for control requests about once a second while steps run; a
    # back-off of several seconds should not delay a cancel any longer than that.
    assert waited < 2.5


def test_unpause_while_the_pause_is_settling_is_not_lost(durable_backend: Backend) -> None:
    release = {"quick": threading.Event(), "slow": threading.Event()}
    entered = {"quick": threading.Event(), "slow": threading.Event()}
    calls = Calls()

    def quick(x: int) -> int:
        entered["quick"].set()
        assert release["quick"].wait(10)
        return x

    def slow(x: int) -> int:
        entered["slow"].set()
        assert release["slow"].wait(10)
        return x

    def after(joined: dict[str, int]) -> int:
        calls.add("after")
        return joined["quick"] + joined["slow"]

    wf = Flow("settling").fork().branch(quick).branch(slow).join(after).build()
    client = WorkflowClient(durable_backend)
    pool, run = in_background(run_durable_workflow, wf, "st-1", 1, backend=durable_backend)
    try:
        assert entered["quick"].wait(5)
        assert entered["slow"].wait(5)
        pause_workflow("st-1", durable_backend)
        # "quick" checkpoints: the runner learns of the pause there, while "slow" runs on.
        release["quick"].set()
        wait_until(lambda: client.get_task_result("st-1", "quick") == 1, what="quick")
        # The operator changes their mind before "slow" returns.
        unpause_workflow("st-1", durable_backend)
        release["slow"].set()
        run.result(timeout=10)
    finally:
        for event in release.values():
            event.set()
        pool.shutdown(wait=False)
    assert not client.status("st-1").is_paused(), "the unpause was lost"
    assert resume_workflow(wf, "st-1", durable_backend).output == 2
    assert calls.items == ["after"]


def test_an_accepted_definition_change_sticks(durable_backend: Backend) -> None:
    def first(x: int) -> int:
        return x + 1

    def second(x: int) -> int:
        return x * 10

    old = Flow("migrating").then(first).delay("d1", 0.05).then(second).build()
    new = Flow("migrating").then(first).delay("d1", 0.05).delay("d2", 0.05).then(second).build()
    assert run_durable_workflow(old, "mig-1", 1, backend=durable_backend).is_waiting()
    time.sleep(0.06)
    migrated = resume_workflow(new, "mig-1", durable_backend, allow_definition_change=True)
    assert migrated.is_waiting()
    time.sleep(0.06)
    # The instance now runs under the new definition; resuming it needs no opt-in again.
    assert resume_workflow(new, "mig-1", durable_backend).output == 20
