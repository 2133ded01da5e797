"""After ``os.fork()`` the child's sync API, clients and backends work.

What Celery's prefork pool, ``gunicorn --preload`` and ``multiprocessing`` with the
``fork`` start method do: the parent has used the sync API (so its sayiir loop thread
runs, its thread pools have threads, its backend is connected) and then forks. The
child inherits copies of all that but none of the threads; it must start its own
instead of waiting forever on the parent's.

Each child runs real durable workflows on the backend object it inherited and exits
with ``os._exit(code)``; a child that hangs is killed, so the suite never hangs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    Flow,
    SqliteBackend,
    Worker,
    Workflow,
    WorkflowClient,
    run_durable_workflow,
    task,
)
from sayiir_core.runtime.loop_thread import run_sync

CHILD_TIMEOUT = 30.0


@task
def add_one(x: int) -> int:  # sync: runs in a thread pool
    return x + 1


@task
async def double(x: int) -> int:  # async: runs on the sayiir loop
    return x * 2


def _flow() -> Workflow:
    return Flow("forked").then(add_one).then(double).build()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def used_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """A SQLite or PostgreSQL backend the parent has used through the sync API."""
    backend: Backend
    if request.param == "postgres":
        backend = request.getfixturevalue("make_postgres_backend")()
    else:
        backend = SqliteBackend(tmp_path / "forked.db")
    try:
        yield backend
    finally:
        run_sync(backend.close())


def _parent_uses(backend: Backend) -> WorkflowClient:
    """Start the loop thread, the thread pools and the backend's connections, as an app would."""
    workflow = _flow()
    assert run_durable_workflow(workflow, "parent-1", 1, backend).output == 4
    client = WorkflowClient(backend)
    assert client.status("parent-1").is_completed()
    return client


def _child_runs(backend: Backend, client: WorkflowClient) -> int:
    """What a forked child does with what it inherited; 0 when every check holds."""
    workflow = _flow()
    # First the client made in the parent, before anything else opens the backend here.
    if not client.status("parent-1").is_completed():
        print("child: the parent's instance does not read as completed", file=sys.stderr)
        return 2
    client.submit(workflow, "child-2", 3)
    status = run_durable_workflow(workflow, "child-1", 2, backend)
    if status.output != 6:
        print(f"child: run_durable_workflow gave {status!r}", file=sys.stderr)
        return 2
    with Worker("child-worker", backend, poll_interval=0.05).start([workflow]):
        result = client.result("child-2", timeout=CHILD_TIMEOUT / 2)
    if result != 8:
        print(f"child: the worker's result was {result!r}", file=sys.stderr)
        return 3
    return 0


def _exit_code_of_fork(child: Callable[[], int]) -> int:
    """Fork; the child runs ``child`` and ``os._exit``s with its result (1 if it raised).

    Returns the child's exit code; fails the test if it does not exit within
    ``CHILD_TIMEOUT`` seconds (after killing it).
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads: that process
        # is exactly what this test is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = child()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not finish within {CHILD_TIMEOUT}s (killed)")


def test_a_forked_child_runs_workflows_on_what_it_inherited(used_backend: Backend) -> None:
    client = _parent_uses(used_backend)

    code = _exit_code_of_fork(lambda: _child_runs(used_backend, client))

    assert code == 0
    # The parent's loop, pools and connections still work, and see the child's work.
    assert client.status("child-1").output == 6
    assert client.result("child-2", timeout=10) == 8
    assert run_durable_workflow(_flow(), "parent-2", 5, used_backend).output == 12


def test_a_multiprocessing_fork_child_runs_workflows(used_backend: Backend) -> None:
    client = _parent_uses(used_backend)
    context = multiprocessing.get_context("fork")

    def target() -> None:
        code = _child_runs(used_backend, client)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        process = context.Process(target=target, name="sayiir-forked-child")
        process.start()
    process.join(CHILD_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"the multiprocessing child did not finish within {CHILD_TIMEOUT}s")

    assert process.exitcode == 0
    assert client.status("child-1").output == 6
    assert run_durable_workflow(_flow(), "parent-2", 5, used_backend).output == 12


def test_a_worker_running_in_the_parent_is_not_the_childs(used_backend: Backend) -> None:
    """The child has none of the parent's worker: its handle neither runs nor blocks."""
    client = _parent_uses(used_backend)
    workflow = _flow()

    with Worker("parent-worker", used_backend, poll_interval=0.05).start([workflow]) as handle:

        def child() -> int:
            if handle.is_alive():
                return 2
            handle.shutdown()
            handle.join()  # returns at once: nothing of it runs here
            return _child_runs(used_backend, client)

        code = _exit_code_of_fork(child)
        assert handle.is_alive()  # the parent's worker runs on

    assert code == 0
    assert not handle.is_alive()


def test_a_backend_first_opened_in_the_child_works_in_both(tmp_path: Any) -> None:
    """The parent made a client but never used it: the child opens the backend first."""
    backend = SqliteBackend(tmp_path / "fresh.db")
    client = WorkflowClient(backend)

    def child() -> int:
        status = run_durable_workflow(_flow(), "fresh-1", 0, backend)
        return 0 if client.status("fresh-1").output == 2 and status.is_completed() else 2

    try:
        assert _exit_code_of_fork(child) == 0
        assert client.status("fresh-1").output == 2
    finally:
        run_sync(backend.close())
