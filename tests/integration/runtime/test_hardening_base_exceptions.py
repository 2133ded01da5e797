"""A task's BaseException, or an exception whose ``__str__`` raises, is the task's failure.

Issue 10, items 2 and 4: ``sys.exit()``, ``KeyboardInterrupt`` or a ``BaseException``
subclass raised by a task used to kill the loop thread (``run_workflow`` hung forever)
or escape raw, leaving the instance ``running``. Each must end in a recorded failure
(or a retry, per the task's policy), and the engine must go on serving.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import pytest

from sayiir_core import (
    Backend,
    Flow,
    RetryPolicy,
    TaskError,
    Workflow,
    WorkflowClient,
    run_durable_workflow,
    run_workflow,
    task,
)

from .conftest import HandleStarter
from .helpers import wait_until


class _Abort(BaseException):
    """A BaseException subclass, as some libraries define for their own unwinding."""


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() is broken")


def _exit() -> NoReturn:
    sys.exit(3)


def _interrupt() -> NoReturn:
    raise KeyboardInterrupt


def _abort() -> NoReturn:
    raise _Abort("stop everything")


def _unprintable() -> NoReturn:
    raise _UnprintableError


RAISERS: dict[str, tuple[Callable[[], NoReturn], str]] = {
    "sys.exit": (_exit, "SystemExit"),
    "KeyboardInterrupt": (_interrupt, "KeyboardInterrupt"),
    "BaseException subclass": (_abort, "_Abort"),
    "broken __str__": (_unprintable, "_UnprintableError"),
}


@pytest.fixture(params=list(RAISERS))
def raiser(request: pytest.FixtureRequest) -> tuple[Callable[[], NoReturn], str]:
    return RAISERS[request.param]


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def _failing_workflow(name: str, raise_it: Callable[[], NoReturn], flavour: str) -> Workflow:
    if flavour == "sync":

        @task("boom")
        def boom(x: int) -> int:
            raise_it()

        return Flow(name).then(boom).build()

    @task("boom")
    async def boom_async(x: int) -> int:
        raise_it()

    return Flow(name).then(boom_async).build()


def _still_serving() -> None:
    """The loop thread behind the sync API is alive: a new run completes."""
    assert run_workflow(Flow("after").then(lambda x: x + 1).build(), 1) == 2


def test_run_workflow_raises_a_task_error(
    raiser: tuple[Callable[[], NoReturn], str], flavour: str
) -> None:
    raise_it, error_type = raiser
    with pytest.raises(TaskError) as caught:
        run_workflow(_failing_workflow("be", raise_it, flavour), 1)
    assert caught.value.error_type == error_type
    _still_serving()


def test_run_durable_workflow_records_the_failure(
    durable_backend: Backend, raiser: tuple[Callable[[], NoReturn], str], flavour: str
) -> None:
    raise_it, error_type = raiser
    workflow = _failing_workflow("be-durable", raise_it, flavour)
    status = run_durable_workflow(workflow, "be-1", 1, backend=durable_backend)
    assert status.status == "failed"
    assert status.error_type == error_type
    assert WorkflowClient(durable_backend).status("be-1").status == "failed"
    _still_serving()


def test_a_worker_records_the_failure_and_goes_on(
    durable_backend: Backend,
    start_worker: HandleStarter,
    raiser: tuple[Callable[[], NoReturn], str],
    flavour: str,
) -> None:
    raise_it, error_type = raiser
    failing = _failing_workflow("be-worker", raise_it, flavour)
    fine = Flow("fine").then(lambda x: x * 2).build()
    client = WorkflowClient(durable_backend)
    handle = start_worker("w", [failing, fine])
    client.submit(failing, "bad-1", 1)
    client.submit(fine, "good-1", 21)
    wait_until(lambda: client.status("bad-1").is_finished(), what="the failure recorded")
    wait_until(lambda: client.status("good-1").is_finished(), what="the other instance")
    assert client.status("bad-1").error_type == error_type
    assert client.status("good-1").output == 42
    assert handle.is_alive()
    assert handle.error is None


def test_a_base_exception_is_retried_per_the_policy(durable_backend: Backend) -> None:
    attempts: list[int] = []

    @task("flaky", retries=RetryPolicy(max_retries=1, initial_delay_secs=0.01))
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            sys.exit("first attempt exits")
        return x + 1

    status = run_durable_workflow(
        Flow("be-retry").then(flaky).build(), "retry-1", 1, backend=durable_backend
    )
    assert status.output == 2
    assert len(attempts) == 2


def test_the_error_message_of_an_unprintable_exception_says_so() -> None:
    with pytest.raises(TaskError) as caught:
        run_workflow(_failing_workflow("unprintable", _unprintable, "sync"), 1)
    assert "str() failed" in str(caught.value)
