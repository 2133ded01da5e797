"""Kill -9 a process mid-workflow, start another, and check nothing is lost or doubled.

Every test runs a small application script (written to ``tmp_path``) in subprocesses
over one SQLite file. Each step appends ``"<step> <attempt> started"`` and
``"<step> <attempt> done"`` to a log file and fsyncs it, so the log survives SIGKILL and
shows exactly which step bodies ran. The test reads the database afterwards through
``SqliteBackend``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sayiir_core import BackendError, HistoryEvent, SqliteBackend
from sayiir_core.backends import InstanceRecord, LoadedInstance

pytestmark = pytest.mark.chaos


REPO_ROOT = Path(__file__).resolve().parents[2]
BACKOFF_SECS = 1.5
STEPS = ["a", "b", "c", "d"]

APP = textwrap.dedent(
    f'''
    """A four-step workflow with knobs for the crash tests."""

    import json
    import os
    import sys
    import time

    from sayiir_core.backends.sqlite import SqliteBackend
    from sayiir_core.client import WorkflowClient
    from sayiir_core.runtime.context import get_task_context
    from sayiir_core.runtime.worker import Worker
    from sayiir_core.sync import resume_workflow, run_durable_workflow
    from sayiir_core.workflow import Flow, RetryPolicy, task

    DB = os.environ["CRASH_DB"]
    LOG = os.environ["CRASH_LOG"]
    BLOCK = os.environ.get("CRASH_BLOCK")            # this step sleeps after "started"
    FAIL_FIRST = os.environ.get("CRASH_FAIL_FIRST")  # this step fails its first attempt
    POLICY = RetryPolicy(max_retries=3, initial_delay_secs={BACKOFF_SECS})


    def log(line):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


    def step(name):
        def body(done_so_far):
            attempt = get_task_context().attempt
            log(f"{{name}} {{attempt}} started")
            if name == BLOCK:
                time.sleep(600)
            if name == FAIL_FIRST and attempt == 1:
                log(f"{{name}} {{attempt}} failed")
                raise ConnectionError("flaky dependency")
            log(f"{{name}} {{attempt}} done")
            return done_so_far + [name]

        return task(name, retries=POLICY)(body)


    flow = Flow("crash-demo")
    for name in {STEPS!r}:
        flow = flow.then(step(name))
    WORKFLOW = flow.build()


    def report(status):
        print(json.dumps({{"status": status.status, "output": status.output}}), flush=True)


    def main():
        role, instance_id = sys.argv[1], sys.argv[2]
        backend = SqliteBackend(DB)
        if role == "run":
            report(run_durable_workflow(WORKFLOW, instance_id, [], backend=backend))
        elif role == "resume":
            report(resume_workflow(WORKFLOW, instance_id, backend))
        elif role == "worker":
            client = WorkflowClient(backend, conflict_policy="use_existing")
            client.submit(WORKFLOW, instance_id, [])
            worker = Worker(sys.argv[3], backend, poll_interval=0.05, claim_ttl=float(sys.argv[4]))
            handle = worker.start([WORKFLOW])
            while not client.status(instance_id).is_finished():
                time.sleep(0.05)
            handle.shutdown()
            handle.join()
            report(client.status(instance_id))
        else:
            raise SystemExit(f"unknown role {{role!r}}")


    if __name__ == "__main__":
        main()
    '''
)


@dataclass
class App:
    """The application script and its files in one test's ``tmp_path``."""

    script: Path
    db: Path
    log: Path

    def env(self, **knobs: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["CRASH_DB"] = str(self.db)
        env["CRASH_LOG"] = str(self.log)
        env.update(knobs)
        return env

    def start(self, *args: str, **knobs: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.script), *args],
            env=self.env(**knobs),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **knobs: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(self.script), *args],
            env=self.env(**knobs),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for_line(self, line: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            if process.poll() is not None:
                _, stderr = process.communicate()
                raise AssertionError(f"process exited ({process.returncode}) early: {stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line!r} in the log after {timeout}s: {self.lines()}")
            time.sleep(0.01)


@pytest.fixture
def app(tmp_path: Path) -> App:
    script = tmp_path / "crash_app.py"
    script.write_text(APP)
    return App(script=script, db=tmp_path / "crash.db", log=tmp_path / "steps.log")


def kill_9(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL


async def _read(db: Path, instance_id: str) -> tuple[LoadedInstance, list[HistoryEvent]]:
    backend = SqliteBackend(db)
    await backend.open()
    try:
        loaded = await backend.load(instance_id)
        assert loaded is not None, f"no instance {instance_id!r} in {db}"
        return loaded, await backend.history(instance_id)
    finally:
        await backend.close()


def read_db(db: Path, instance_id: str) -> tuple[LoadedInstance, list[HistoryEvent]]:
    """What a fresh process sees in the database file."""
    return asyncio.run(_read(db, instance_id))


def record_of(db: Path, instance_id: str) -> InstanceRecord:
    return read_db(db, instance_id)[0].record


def wait_for_record(
    db: Path, instance_id: str, check: Callable[[InstanceRecord], bool], timeout: float = 30
) -> InstanceRecord:
    deadline = time.monotonic() + timeout
    while True:
        try:
            record: InstanceRecord | None = record_of(db, instance_id)
        except (AssertionError, BackendError):  # not written yet, or locked a moment
            record = None
        if record is not None and check(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"the stored instance never matched after {timeout}s")
        time.sleep(0.02)


def started_counts(lines: list[str]) -> Counter[str]:
    return Counter(line.split()[0] for line in lines if line.endswith(" started"))


def assert_each_step_checkpointed_once(loaded: LoadedInstance, events: list[HistoryEvent]) -> None:
    assert list(loaded.checkpoints) == STEPS
    assert [json.loads(loaded.checkpoints[name]) for name in STEPS] == [
        STEPS[: i + 1] for i in range(len(STEPS))
    ]
    completed = Counter(e.step_key for e in events if e.kind == "task_completed")
    assert completed == Counter(STEPS)
    assert [e.kind for e in events].count("completed") == 1


def test_kill_9_mid_step_then_resume(app: App) -> None:
    crashed = app.start("run", "order-1", CRASH_BLOCK="c")
    app.wait_for_line("c 1 started", crashed)
    kill_9(crashed)

    loaded, _ = read_db(app.db, "order-1")
    assert list(loaded.checkpoints) == ["a", "b"]
    assert not loaded.record.status.is_terminal

    result = app.run("resume", "order-1")
    assert result == {"status": "completed", "output": STEPS}

    lines = app.lines()
    # Checkpointed steps did not run again; the interrupted one did, once more.
    assert started_counts(lines) == Counter({"a": 1, "b": 1, "c": 2, "d": 1})
    assert lines[:5] == ["a 1 started", "a 1 done", "b 1 started", "b 1 done", "c 1 started"]
    assert lines[-2:] == ["d 1 started", "d 1 done"]
    loaded, events = read_db(app.db, "order-1")
    assert loaded.record.status.value == "completed"
    assert_each_step_checkpointed_once(loaded, events)

    # A second resume of the finished instance changes nothing.
    assert app.run("resume", "order-1") == result
    assert app.lines() == lines


def test_kill_9_during_a_retry_back_off_keeps_the_attempt(app: App) -> None:
    crashed = app.start("run", "order-2", CRASH_FAIL_FIRST="b")
    app.wait_for_line("b 1 failed", crashed)
    record = wait_for_record(
        app.db, "order-2", lambda r: dict(r.control.get("attempts", {})) == {"b": 1}
    )
    kill_9(crashed)
    assert record.status.value == "waiting"
    due = record.control["retry_at"]["b"]

    result = app.run("resume", "order-2", CRASH_FAIL_FIRST="b")
    assert result == {"status": "completed", "output": STEPS}

    b_lines = [line for line in app.lines() if line.startswith("b ")]
    # Attempt 1 is not run again after the restart: the resumed run is attempt 2.
    assert b_lines == ["b 1 started", "b 1 failed", "b 2 started", "b 2 done"]
    loaded, events = read_db(app.db, "order-2")
    assert_each_step_checkpointed_once(loaded, events)
    b_events = [(e.kind, e.attempt) for e in events if e.step_key == "b"]
    assert b_events == [
        ("task_started", 1),
        ("task_failed", 1),
        ("retry_scheduled", 2),
        ("task_started", 2),
        ("task_completed", 2),
    ]
    second_start = next(e for e in events if e.kind == "task_started" and e.attempt == 2)
    assert second_start.at >= due - 0.01, "the back-off due time was not kept"


def test_a_second_worker_finishes_after_the_first_is_killed(app: App) -> None:
    claim_ttl = "1.0"
    first = app.start("worker", "order-3", "worker-1", claim_ttl, CRASH_BLOCK="c")
    app.wait_for_line("c 1 started", first)
    kill_9(first)
    lease_until = record_of(app.db, "order-3").lease_until
    assert lease_until is not None

    result = app.run("worker", "order-3", "worker-2", claim_ttl)
    assert result == {"status": "completed", "output": STEPS}

    assert started_counts(app.lines()) == Counter({"a": 1, "b": 1, "c": 2, "d": 1})
    loaded, events = read_db(app.db, "order-3")
    assert_each_step_checkpointed_once(loaded, events)
    by_worker = {e.step_key: e.worker_id for e in events if e.kind == "task_completed"}
    assert by_worker == {"a": "worker-1", "b": "worker-1", "c": "worker-2", "d": "worker-2"}
    takeover = next(e for e in events if e.kind == "task_started" and e.worker_id == "worker-2")
    assert takeover.at >= lease_until - 0.01, "worker-2 claimed before the lease expired"
