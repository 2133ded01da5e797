"""Durable delays and external signals: parking, buffering, FIFO order, timeouts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    Flow,
    InstanceNotFoundError,
    InvalidStateError,
    SerializationError,
    SignalTimeoutError,
    UnknownSignalError,
    Workflow,
    WorkflowClient,
    WorkflowError,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
)

from .helpers import Calls


def prepare(x: int) -> int:
    return x + 1


def finish(x: Any) -> dict[str, Any]:
    return {"finished": x}


# -- delays ------------------------------------------------------------------------------


def test_a_delay_due_at_once_checkpoints_itself_not_the_step_before(
    durable_backend: Backend,
) -> None:
    wf = Flow("instant").then(prepare).delay("pause", 0).then(finish).build()

    status = run_durable_workflow(wf, "instant-1", 1, backend=durable_backend)

    client = WorkflowClient(durable_backend)
    assert status.output == {"finished": 2}
    assert client.get_task_result("instant-1", "prepare") == 2
    assert client.get_task_result("instant-1", "pause") is None


def delayed_workflow(calls: Calls, seconds: float) -> Workflow:
    def before(x: int) -> int:
        calls.add("before")
        return x + 1

    def after(x: int) -> int:
        calls.add("after")
        return x * 10

    return Flow("delayed").then(before).delay("cool_off", seconds).then(after).build()


def test_delay_parks_then_resumes_after_the_wake_time(durable_backend: Backend) -> None:
    calls = Calls()
    wf = delayed_workflow(calls, 0.3)
    before = datetime.now(UTC)
    status = run_durable_workflow(wf, "delay-1", 1, backend=durable_backend)
    assert status.status == "waiting"
    assert status.is_waiting()
    assert status.is_in_progress()
    assert status.delay_id == "cool_off"
    assert status.wake_at is not None
    assert before + timedelta(seconds=0.25) < status.wake_at < before + timedelta(seconds=2)
    assert calls.items == ["before"]

    early = resume_workflow(wf, "delay-1", durable_backend)
    assert early.status == "waiting"
    assert early.wake_at == status.wake_at
    assert calls.items == ["before"]

    time.sleep(max(0.0, (status.wake_at - datetime.now(UTC)).total_seconds()) + 0.05)
    done = resume_workflow(wf, "delay-1", durable_backend)
    assert done.is_completed()
    assert done.output == 20
    assert calls.items == ["before", "after"]

    kinds = [e.kind for e in WorkflowClient(durable_backend).history("delay-1")]
    assert kinds.index("timer_started") < kinds.index("timer_fired") < kinds.index("completed")


def test_delay_in_an_in_memory_run_sleeps_in_process() -> None:
    calls = Calls()
    started = time.monotonic()
    assert run_workflow(delayed_workflow(calls, 0.2), 1) == 20
    assert time.monotonic() - started >= 0.2
    assert calls.items == ["before", "after"]


def test_run_workflow_that_parks_explains_how_to_continue(durable_backend: Backend) -> None:
    with pytest.raises(WorkflowError, match="run_durable_workflow"):
        run_workflow(delayed_workflow(Calls(), 60), 1, instance_id="p-1", backend=durable_backend)
    assert WorkflowClient(durable_backend).status("p-1").status == "waiting"


# -- signals -----------------------------------------------------------------------------


def approval_workflow() -> Workflow:
    return Flow("approval").then(prepare).wait_for_signal("approved").then(finish).build()


def test_signal_wait_parks_and_the_payload_flows_on(durable_backend: Backend) -> None:
    wf = approval_workflow()
    status = run_durable_workflow(wf, "sig-1", 1, backend=durable_backend)
    assert status.status == "awaiting_signal"
    assert status.is_awaiting_signal()
    assert status.is_in_progress()

    assert resume_workflow(wf, "sig-1", durable_backend).status == "awaiting_signal"

    send_signal("sig-1", "approved", {"by": "ana"}, durable_backend)
    done = resume_workflow(wf, "sig-1", durable_backend)
    assert done.is_completed()
    assert done.output == {"finished": {"by": "ana"}}
    client = WorkflowClient(durable_backend)
    assert client.get_task_result("sig-1", "approved") == {"by": "ana"}
    kinds = [e.kind for e in client.history("sig-1")]
    assert kinds.index("signal_sent") < kinds.index("signal_received")


def test_signal_sent_before_the_wait_is_not_lost(durable_backend: Backend) -> None:
    wf = Flow("early").then(prepare).delay("pause", 0.2).wait_for_signal("go").then(finish).build()
    status = run_durable_workflow(wf, "early-1", 1, backend=durable_backend)
    assert status.status == "waiting"
    send_signal("early-1", "go", "ready", durable_backend)

    time.sleep(0.25)
    done = resume_workflow(wf, "early-1", durable_backend)
    assert done.is_completed()
    assert done.output == {"finished": "ready"}


def test_signal_sent_to_a_submitted_instance_is_buffered(durable_backend: Backend) -> None:
    wf = approval_workflow()
    client = WorkflowClient(durable_backend)
    client.submit(wf, "sub-1", 1)
    client.send_signal("sub-1", "approved", True)
    done = resume_workflow(wf, "sub-1", durable_backend)
    assert done.output == {"finished": True}


def test_signals_of_one_name_are_consumed_in_fifo_order(durable_backend: Backend) -> None:
    def first_seen(payload: Any) -> Any:
        return payload

    wf = (
        Flow("fifo")
        .wait_for_signal("item", name="first")
        .then(first_seen)
        .wait_for_signal("item", name="second")
        .then(finish)
        .build()
    )
    client = WorkflowClient(durable_backend)
    client.submit(wf, "fifo-1", None)
    client.send_signal("fifo-1", "item", {"n": 1})
    client.send_signal("fifo-1", "item", {"n": 2})
    # A name it never waits for: refused by the client that submitted (it knows the
    # workflow), buffered when sent by one that does not, and never consumed.
    with pytest.raises(UnknownSignalError):
        client.send_signal("fifo-1", "other", {"n": 3})
    WorkflowClient(durable_backend).send_signal("fifo-1", "other", {"n": 3})

    done = resume_workflow(wf, "fifo-1", durable_backend)
    assert done.is_completed()
    assert client.get_task_result("fifo-1", "first") == {"n": 1}
    assert client.get_task_result("fifo-1", "first_seen") == {"n": 1}
    assert client.get_task_result("fifo-1", "second") == {"n": 2}
    assert done.output == {"finished": {"n": 2}}


def test_one_signal_is_delivered_to_one_wait_only(durable_backend: Backend) -> None:
    wf = (
        Flow("once")
        .wait_for_signal("item", name="first")
        .wait_for_signal("item", name="second")
        .build()
    )
    client = WorkflowClient(durable_backend)
    client.submit(wf, "once-1", None)
    client.send_signal("once-1", "item", "only")
    status = resume_workflow(wf, "once-1", durable_backend)
    assert status.status == "awaiting_signal"
    assert client.get_task_result("once-1", "first") == "only"
    assert client.get_task_result("once-1", "second") is None


def test_signal_timeout_fails_the_instance(durable_backend: Backend) -> None:
    wf = Flow("deadline").then(prepare).wait_for_signal("approved", timeout=0.2).build()
    status = run_durable_workflow(wf, "late-1", 1, backend=durable_backend)
    assert status.status == "awaiting_signal"

    time.sleep(0.25)
    failed = resume_workflow(wf, "late-1", durable_backend)
    assert failed.is_failed()
    assert failed.error_type == "SignalTimeoutError"
    assert failed.error is not None
    assert "SignalTimeoutError" in failed.error
    assert "approved" in failed.error

    with pytest.raises(SignalTimeoutError, match="approved"):
        run_workflow(
            wf, 1, instance_id="late-1", backend=durable_backend, conflict_policy="use_existing"
        )


def test_signal_before_the_timeout_wins(durable_backend: Backend) -> None:
    wf = Flow("in-time").wait_for_signal("approved", timeout=60).then(finish).build()
    assert run_durable_workflow(wf, "t-1", 1, backend=durable_backend).is_awaiting_signal()
    send_signal("t-1", "approved", "yes", durable_backend)
    assert resume_workflow(wf, "t-1", durable_backend).output == {"finished": "yes"}


def test_signal_to_a_finished_instance_is_an_invalid_state(durable_backend: Backend) -> None:
    wf = Flow("done").then(prepare).build()
    run_durable_workflow(wf, "fin-1", 1, backend=durable_backend)
    with pytest.raises(InvalidStateError):
        send_signal("fin-1", "approved", {}, durable_backend)


def test_signal_to_an_unknown_instance_is_not_found(durable_backend: Backend) -> None:
    with pytest.raises(InstanceNotFoundError, match="ghost"):
        send_signal("ghost", "approved", {}, durable_backend)


def test_signal_payload_must_be_json(durable_backend: Backend) -> None:
    wf = approval_workflow()
    run_durable_workflow(wf, "json-1", 1, backend=durable_backend)
    with pytest.raises(SerializationError, match="approved"):
        send_signal("json-1", "approved", object(), durable_backend)
    with pytest.raises(SerializationError):
        WorkflowClient(durable_backend).send_signal("json-1", "approved", {1, 2})
    assert resume_workflow(wf, "json-1", durable_backend).status == "awaiting_signal"


def test_in_memory_run_cannot_wait_for_a_signal() -> None:
    with pytest.raises(WorkflowError, match="durable") as raised:
        run_workflow(approval_workflow(), 1)
    assert "approved" in str(raised.value)
    assert "run_durable_workflow" in str(raised.value)


def test_awaiting_signal_status_names_the_signal(durable_backend: Backend) -> None:
    wf = Flow("named").then(prepare).wait_for_signal("approved", name="approval").build()
    status = run_durable_workflow(wf, "named-1", 1, backend=durable_backend)
    assert status.is_awaiting_signal()
    assert status.signal_name == "approved"
    assert status.signal_id == "approval"
    assert WorkflowClient(durable_backend).status("named-1").signal_name == "approved"
