"""``sayiir worker`` and ``sayiir run`` with a task that calls ``sys.exit()`` (issue 10, item 2).

Before: ``sayiir run`` hung forever (the loop thread died) and ``sayiir worker`` exited
with code 3 without a word, leaving the instance ``running`` for the next worker to die
on. Real processes, a real SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sayiir_core import SqliteBackend, WorkflowClient
from sayiir_core.runtime.loop_thread import run_sync

REPO_ROOT = Path(__file__).resolve().parents[3]

FLOWS = """
import sys
from sayiir_core import Flow, task

@task("leave")
def leave(x):
    sys.exit(3)

@task("interrupt")
def interrupt(x):
    raise KeyboardInterrupt

exits = Flow("exits").then(leave).build()
interrupts = Flow("interrupts").then(interrupt).build()
"""


def _env() -> dict[str, str]:
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def module(tmp_path: Path) -> str:
    (tmp_path / "exiting_flows.py").write_text(FLOWS)
    return "exiting_flows"


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "sayiir_core.cli", *argv]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be sent gracefully on Windows")
def test_a_worker_records_sys_exit_as_a_failure_and_keeps_serving(
    tmp_path: Path, module: str
) -> None:
    db_path = tmp_path / "exits.db"
    url = f"sqlite:///{db_path}"
    submit = ["submit", "--db", url, "--instance-id"]
    for target, instance_id in (("exits", "exit-1"), ("interrupts", "int-1")):
        done = subprocess.run(
            _cli(*submit, instance_id, f"{module}:{target}"),
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    worker = subprocess.Popen(
        _cli(
            *("worker", f"{module}:exits", f"{module}:interrupts", "--db", url),
            *("--poll-interval", "0.05", "--id", "exit-worker"),
        ),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    backend = SqliteBackend(db_path)
    client = WorkflowClient(backend)
    try:
        deadline = time.monotonic() + 60
        while not all(client.status(i).is_finished() for i in ("exit-1", "int-1")):
            assert worker.poll() is None, f"worker exited with {worker.returncode}"
            assert time.monotonic() < deadline, "the failures were not recorded"
            time.sleep(0.05)
        assert client.status("exit-1").error_type == "SystemExit"
        assert client.status("int-1").error_type == "KeyboardInterrupt"
        assert worker.poll() is None  # still serving
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        run_sync(backend.close())


def test_sayiir_run_ends_with_the_task_failure(tmp_path: Path, module: str) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    done = subprocess.run(
        _cli("run", f"{module}:exits", "--db", url, "--instance-id", "run-1"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,  # before: it hung forever
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "SystemExit" in done.stdout + done.stderr
