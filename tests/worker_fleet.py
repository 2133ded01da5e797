"""Worker subprocesses on one PostgreSQL schema, for the acceptance tests that kill them.

A test writes its worker program as text (``app``); each ``Fleet.start`` runs it as a
real subprocess with ``CHAOS_*`` variables telling it where to log and which schema to
use. The program prints ``ready`` once its worker runs. Step bodies append lines to one
fsynced log file, so the log shows exactly which bodies ran even after a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from postgres_service import run_sync

from sayiir_core import WorkflowClient
from sayiir_core.backends.postgres import PostgresBackend

REPO_ROOT = Path(__file__).resolve().parents[1]


class Fleet:
    """Worker subprocesses sharing one schema and one log file."""

    def __init__(self, tmp_path: Path, url: str, schema: str, app: str) -> None:
        self.script = tmp_path / "chaos_app.py"
        self.script.write_text(app)
        self.log = tmp_path / "steps.log"
        self.url = url
        self.schema = schema
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, worker_id: str, **knobs: str) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(
            CHAOS_LOG=str(self.log),
            CHAOS_WORKER=worker_id,
            CHAOS_URL=self.url,
            CHAOS_SCHEMA=self.schema,
            **knobs,
        )
        stderr = self.log.with_name(f"{worker_id}.stderr")
        with stderr.open("w") as errors:
            process = subprocess.Popen(
                [sys.executable, str(self.script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        self.processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", stderr.read_text()
        return process

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def client(self) -> WorkflowClient:
        return WorkflowClient(PostgresBackend(self.url, schema=self.schema), owns_backend=True)

    def completed_counts(self, instance_ids: list[str]) -> Counter[tuple[str, str]]:
        """How many ``task_completed`` events each (instance, step) has in history."""

        async def read() -> Counter[tuple[str, str]]:
            backend = PostgresBackend(self.url, schema=self.schema)
            await backend.open()
            try:
                counts: Counter[tuple[str, str]] = Counter()
                for instance_id in instance_ids:
                    for event in await backend.history(instance_id):
                        if event.kind == "task_completed" and event.step_key is not None:
                            counts[(instance_id, event.step_key)] += 1
                return counts
            finally:
                await backend.close()

        return run_sync(read())

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def started_counts(lines: list[str]) -> Counter[tuple[str, str]]:
    """How often each (instance, step) body started, from log lines ``<i> <step> ... started``."""
    return Counter(
        (line.split()[0], line.split()[1]) for line in lines if line.endswith(" started")
    )
