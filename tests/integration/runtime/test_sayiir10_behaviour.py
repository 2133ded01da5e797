"""Running workflows side by side with sayiir 1.0.0, and the behaviour that must match.

Where both libraries are driven by the same test (the ``lib`` fixture), the assertion
is what Sayiir 1.0 users rely on. Tests on ``durable_backend`` prove ours on memory,
SQLite and PostgreSQL: repeated steps keep their own checkpoints across a rebuild, the
``in_progress`` status maps to the stored ``pending`` state, and the task traceback in
``status.error`` survives storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import sayiir_core
from sayiir_core import (
    Backend,
    Flow,
    Status,
    TaskError,
    Workflow,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
)

from .helpers import Calls

BackendFactory = Callable[[], Backend]


def _reference() -> Any:
    return pytest.importorskip(
        "sayiir",
        reason="the reference sayiir==1.0.0 is not installed (it is in the test dependency group)",
    )


@pytest.fixture(params=["sayiir", "sayiir_core"])
def lib(request: pytest.FixtureRequest) -> Any:
    return _reference() if request.param == "sayiir" else sayiir_core


def ok(x: int) -> int:
    return x + 1


def helper_that_raises(x: int) -> int:
    raise ValueError(f"bad value {x}")


def failing(x: int) -> int:
    return helper_that_raises(x)


async def failing_async(x: int) -> int:
    await asyncio.sleep(0)
    return helper_that_raises(x)


# -- status strings and repr -------------------------------------------------------------


def test_a_submitted_instance_is_in_progress(lib: Any) -> None:
    client = lib.WorkflowClient(lib.InMemoryBackend())
    wf = lib.Flow("submitted").then(ok).build()
    submitted = client.submit(wf, "s-1", 1)
    assert submitted.status == "in_progress"
    assert submitted.is_in_progress()
    assert client.status("s-1").status == "in_progress"


def test_repr_names_the_state_like_sayiir(lib: Any) -> None:
    backend = lib.InMemoryBackend()
    completed = lib.run_durable_workflow(lib.Flow("c").then(ok).build(), "c-1", 1, backend)
    failed = lib.run_durable_workflow(lib.Flow("f").then(failing).build(), "f-1", 1, backend)
    delayed = lib.Flow("d").delay("nap", 600).build()
    waiting = lib.run_durable_workflow(delayed, "d-1", 1, backend)
    signal = lib.Flow("s").wait_for_signal("go").build()
    awaiting = lib.run_durable_workflow(signal, "s-1", 1, backend)
    lib.cancel_workflow("d-1", backend, reason="not needed", cancelled_by="ops")
    cancelled = lib.resume_workflow(delayed, "d-1", backend)

    assert repr(completed).startswith("WorkflowStatus::Completed")
    assert repr(failed).startswith("WorkflowStatus::Failed(")
    assert "ValueError: bad value 1" in repr(failed)
    assert repr(waiting).startswith("WorkflowStatus::Waiting(")
    assert repr(awaiting).startswith("WorkflowStatus::AwaitingSignal(")
    assert repr(cancelled).startswith("WorkflowStatus::Cancelled(")
    assert "not needed" in repr(cancelled)


def test_our_repr_shows_the_details_after_the_state(durable_backend: Backend) -> None:
    client = WorkflowClient(durable_backend)
    completed = run_durable_workflow(Flow("c").then(ok).build(), "c-1", 1, durable_backend)
    assert (
        repr(completed) == "WorkflowStatus::Completed(instance_id='c-1', workflow_id='c', output=2)"
    )
    submitted = client.submit(Flow("c").then(ok).build(), "c-2", 1)
    assert repr(submitted) == "WorkflowStatus::InProgress(instance_id='c-2', workflow_id='c')"
    failed = run_durable_workflow(Flow("f").then(failing).build(), "f-1", 1, durable_backend)
    assert repr(failed) == (
        "WorkflowStatus::Failed(instance_id='f-1', workflow_id='f', "
        "error='ValueError: bad value 1', error_type='ValueError', failed_task_id='failing')"
    )


def test_in_progress_is_the_stored_pending_state(durable_backend: Backend) -> None:
    client = WorkflowClient(durable_backend)
    client.submit(Flow("p").then(ok).build(), "p-1", 1)
    run_durable_workflow(Flow("p").then(ok).build(), "p-2", 1, durable_backend)
    assert Status("in_progress") is Status.PENDING
    assert Status.PENDING.reported == "in_progress"
    for wanted in ("in_progress", "pending", Status.PENDING):
        assert [s.instance_id for s in client.list_instances(status=wanted)] == ["p-1"]
    assert [s.status for s in client.list_instances()] == ["completed", "in_progress"]


# -- the task's traceback in the error text ----------------------------------------------


def test_task_error_text_carries_the_tasks_traceback(lib: Any) -> None:
    wf = lib.Flow("tb").then(failing).build()
    with pytest.raises(lib.TaskError) as raised:
        lib.run_workflow(wf, 1)
    text = str(raised.value)
    message, _, traceback = text.partition("\n\nTraceback (most recent call last):\n")
    assert "ValueError: bad value 1" in message
    assert "in failing\n" in traceback
    assert "in helper_that_raises\n" in traceback
    assert 'raise ValueError(f"bad value {x}")' in traceback


def test_our_traceback_starts_at_the_task_function() -> None:
    with pytest.raises(TaskError) as raised:
        run_workflow(Flow("tb").then(failing).build(), 1)
    traceback = str(raised.value).partition("\n\n")[2]
    first_frame = traceback.splitlines()[1]
    assert first_frame.endswith(", in failing"), traceback
    assert "sayiir_core" not in traceback
    assert not traceback.endswith("ValueError: bad value 1")  # the message says it


def test_status_error_keeps_the_traceback_in_storage(open_backend: BackendFactory) -> None:
    wf = Flow("tb").then(failing_async).build()
    failed = run_durable_workflow(wf, "tb-1", 1, open_backend())
    stored = WorkflowClient(open_backend()).status("tb-1")  # read back by a new connection
    for status in (failed, stored):
        assert status.error is not None
        first_line, _, rest = status.error.partition("\n")
        assert first_line == "ValueError: bad value 1"
        assert rest.startswith("\nTraceback (most recent call last):\n")
        assert "in helper_that_raises\n" in rest
        assert status.error_detail is not None
        assert str(status.error_detail) == "ValueError: bad value 1"
    with pytest.raises(TaskError, match="in helper_that_raises"):
        WorkflowClient(open_backend()).result("tb-1")


def test_an_error_without_task_frames_has_no_traceback(durable_backend: Backend) -> None:
    def never_a_list(x: int) -> int:
        return x

    wf = Flow("nolist").then(never_a_list).map(ok).build()
    failed = run_durable_workflow(wf, "n-1", 1, durable_backend)
    assert failed.error == "TypeError: map over 'ok' needs a list input, got int"


# -- the same function at several places ---------------------------------------------------


def test_repeated_places_are_separate_steps_across_a_rebuild(
    open_backend: BackendFactory,
) -> None:
    calls = Calls()

    def inc(x: int) -> int:
        calls.add(x)
        return x + 1

    def dbl(x: int) -> int:
        return x * 2

    def build() -> Workflow:
        return (
            Flow("repeats")
            .then(inc)
            .wait_for_signal("go")
            .then(inc)
            .then(dbl)
            .then(inc)
            .fork()
            .branch(dbl)
            .branch(dbl)
            .join(lambda results: results)
            .build()
        )

    first = build()
    parked = run_durable_workflow(first, "rep-1", 1, open_backend())
    assert parked.status == "awaiting_signal"
    assert calls.items == [1]

    # A new process: a new backend connection and the flow built again from scratch.
    rebuilt = build()
    assert rebuilt.definition_hash == first.definition_hash
    backend = open_backend()
    send_signal("rep-1", "go", 10, backend)
    done = resume_workflow(rebuilt, "rep-1", backend)
    assert done.is_completed(), done
    assert done.output == {"dbl__1": 46, "dbl__2": 46}  # 10 + 1 = 11, 22, 23, 46
    assert calls.items == [1, 10, 22]  # each place ran once, none twice

    client = WorkflowClient(backend)
    results = {task_id: client.get_task_result("rep-1", task_id) for task_id in rebuilt.tasks}
    assert results == {
        "inc": 2,
        "inc__1": 11,
        "dbl": 22,
        "inc__2": 23,
        "dbl__1": 46,
        "dbl__2": 46,
        "lambda_0": {"dbl__1": 46, "dbl__2": 46},
    }

    # retry_from a repeated place re-runs from there, keeping the earlier places.
    assert client.retry_from("rep-1", "inc__2").status == "in_progress"
    again = resume_workflow(build(), "rep-1", backend)
    assert again.output == done.output
    assert calls.items == [1, 10, 22, 22]
