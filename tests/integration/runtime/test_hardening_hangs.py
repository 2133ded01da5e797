"""Hung sync tasks must not wedge the process (issue 10, item 1).

The tasks here really hang (``Event.wait``, ``time.sleep``); each test releases its
events at the end so no thread outlives it for long.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sayiir_core import (
    Backend,
    Flow,
    TaskTimeoutError,
    Worker,
    WorkflowClient,
    run_workflow,
    task,
)
from sayiir_core.runtime.executor import LocalExecutor
from sayiir_core.runtime.in_memory import run_in_memory
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.runtime.task_threads import TaskThreads

from .helpers import wait_until


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: every hung task waits on it, then returns."""
    event = threading.Event()
    yield event
    event.set()


def test_a_timeout_holds_while_the_task_queues_behind_a_hung_thread(
    durable_backend: Backend, release: threading.Event
) -> None:
    @task("hang")
    def hang(x: int) -> int:
        release.wait()
        return x

    @task("quick", timeout=0.3)
    def quick(x: int) -> int:
        return x

    hung = Flow("hung").then(hang).build()
    timed = Flow("timed").then(quick).build()
    client = WorkflowClient(durable_backend)
    executor = LocalExecutor(max_threads=1)  # its only thread hangs, with no timeout
    worker = Worker("w", durable_backend, poll_interval=0.02, executor=executor)
    handle = worker.start([hung, timed])
    try:
        client.submit(hung, "hung-1", 1)
        wait_until(lambda: client.status("hung-1").status == "running", what="the hang")
        client.submit(timed, "timed-1", 1)
        # Before: the clock started when a thread picked the task up, that is never.
        wait_until(lambda: client.status("timed-1").is_finished(), what="the timeout")
        assert client.status("timed-1").error_type == "TaskTimeoutError"
    finally:
        release.set()
        handle.shutdown()
        handle.join(10)
        executor.close()


def test_timed_out_threads_are_replaced(release: threading.Event) -> None:
    @task("hang", timeout=0.2)
    def hang(x: int) -> int:
        release.wait()
        return x

    executor = LocalExecutor(max_threads=2)
    hanging = Flow("hangs").then(hang).build()
    try:
        for n in range(5):  # more hangs than threads
            snapshot = run_sync(run_in_memory(hanging, n, executor, f"hang-{n}"))
            assert snapshot.error is not None
            assert snapshot.error.error_type == "TaskTimeoutError"
        assert executor.abandoned_threads == 5
        fine = Flow("fine").then(lambda x: x + 1).build()
        snapshot = run_sync(run_in_memory(fine, 1, executor, "fine-1"))
        assert snapshot.output == 2
    finally:
        release.set()
        executor.close()
    wait_until(lambda: executor.abandoned_threads == 0, what="the hung threads to end")


def test_task_threads_that_are_all_hung_say_so(
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TaskThreads, "STUCK_AFTER", 0.3)
    threads = TaskThreads(max_threads=1)
    try:
        with caplog.at_level(logging.WARNING, logger="sayiir.worker"):
            first = threads.submit(release.wait, label="hang")
            time.sleep(0.4)  # busy for longer than STUCK_AFTER
            second = threads.submit(lambda: 42, label="queued")
        assert "all 1 sync task threads have been busy" in caplog.text
        release.set()
        assert first.result(10) is True
        assert second.result(10) == 42
    finally:
        release.set()
        threads.close()


def test_a_worker_stops_although_a_timed_out_task_still_hangs(
    durable_backend: Backend, release: threading.Event
) -> None:
    @task("hang", timeout=0.2)
    def hang(x: int) -> int:
        release.wait()
        return x

    hung = Flow("hung-stop").then(hang).build()
    client = WorkflowClient(durable_backend)
    handle = Worker("w", durable_backend, poll_interval=0.02).start([hung])
    client.submit(hung, "stop-1", 1)
    wait_until(lambda: client.status("stop-1").is_finished(), what="the timeout")
    handle.shutdown()
    handle.join(10)
    assert not handle.is_alive()


SCRIPT = """
import time
from sayiir_core import Flow, TaskTimeoutError, run_workflow, task

@task("hang", timeout=0.3)
def hang(x):
    time.sleep(3600)
    return x

try:
    run_workflow(Flow("hang").then(hang).build(), 1)
except TaskTimeoutError:
    print("timed out", flush=True)
"""


def test_a_script_exits_promptly_after_a_hung_task_timed_out(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(SCRIPT))
    # Before: the pool's thread was joined at exit, for an hour. 60 s is a generous
    # bound for "promptly"; a regression would hit it.
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "timed out", done.stderr
    assert done.returncode == 0, done.stderr


def test_run_workflow_survives_more_hangs_than_threads(release: threading.Event) -> None:
    @task("hang", timeout=0.1)
    def hang(x: int) -> int:
        release.wait()
        return x

    hanging = Flow("many-hangs").then(hang).build()
    for n in range(10):  # the default pool had min(32, cpu + 4) threads: 6 here
        with pytest.raises(TaskTimeoutError):
            run_workflow(hanging, n)
    assert run_workflow(Flow("sync-after").then(lambda x: x * 2).build(), 4) == 8


CTRL_C_SCRIPT = """
import asyncio, sys, time
from sayiir_core import Flow, run_workflow, task

@task("hang_sync")
def hang_sync(x):
    time.sleep(3600)

@task("hang_async")
async def hang_async(x):
    await asyncio.sleep(3600)

step = hang_sync if sys.argv[1] == "sync" else hang_async
print("running", flush=True)
run_workflow(Flow("ctrl-c").then(step).build(), 1)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child here")
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_ctrl_c_still_stops_a_script_waiting_on_a_hung_task(tmp_path: Path, flavour: str) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPT))
    child = subprocess.Popen(
        [sys.executable, str(script), flavour],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "running"
        time.sleep(0.5)  # inside run_workflow, waiting on the task
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode != 0
    assert "KeyboardInterrupt" in err


def test_a_worker_whose_threads_all_hang_stops_claiming_until_one_returns(
    durable_backend: Backend,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TaskThreads, "STUCK_AFTER", 0.3)

    @task("hang")
    def hang(x: int) -> int:
        release.wait()
        return x

    hung = Flow("hung-claims").then(hang).build()
    quick = Flow("quick-claims").then(lambda x: x + 1).build()
    client = WorkflowClient(durable_backend)
    executor = LocalExecutor(max_threads=1)
    worker = Worker("w", durable_backend, poll_interval=0.02, executor=executor)
    handle = worker.start([hung, quick])
    try:
        with caplog.at_level(logging.WARNING, logger="sayiir.worker"):
            client.submit(hung, "stuck-1", 1)
            wait_until(lambda: executor.threads_stuck, what="the thread to count as stuck")
            wait_until(lambda: "stops claiming" in caplog.text, what="the warning")
            client.submit(quick, "later-1", 1)
            time.sleep(0.3)  # fifteen polls: it stays unclaimed, free for another worker
            assert client.status("later-1").status == "in_progress"
            release.set()
            wait_until(lambda: client.status("later-1").is_finished(), what="the claim")
        assert client.status("later-1").output == 2
        assert "claiming" in caplog.text
    finally:
        release.set()
        handle.shutdown()
        handle.join(10)
        executor.close()
