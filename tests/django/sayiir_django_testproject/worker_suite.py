"""``manage.py sayiir worker`` as a real subprocess, on SQLite and PostgreSQL (``alias``)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sayiir_django import get_client
from sayiir_django.client import DjangoWorkflowClient
from sayiir_django.models import Checkpoint, HistoryEntry
from sayiir_django_testproject.shop.models import Receipt
from sayiir_django_testproject.shop.workflows import checkout
from sayiir_django_testproject.support import manage, subprocess_env

CHECKOUT_STEPS = {"price", "shipping", "tax", "total", "write_receipt"}


class Workers:
    """Worker subprocesses of one test, each logging to a file; all killed at the end."""

    def __init__(self, alias: str, tmp_path: Path) -> None:
        self._alias = alias
        self._tmp = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with (self._tmp / f"worker-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                manage("sayiir", "worker", "--poll-interval", "0.2", *args),
                env=subprocess_env(self._alias, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def log(self, index: int) -> str:
        return (self._tmp / f"worker-{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is None:
                process.kill()
            process.wait(30)
            # Captured by pytest: shown when the test failed.
            print(f"--- worker {index} (exit {process.returncode}) ---\n{self.log(index)}")


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class WorkerTests:
    alias: str

    @pytest.fixture
    def client(self) -> Iterator[DjangoWorkflowClient]:
        client = get_client(self.alias)
        yield client
        client.close()

    @pytest.fixture
    def workers(self, tmp_path: Path) -> Iterator[Workers]:
        workers = Workers(self.alias, tmp_path)
        yield workers
        workers.stop_all()

    def test_a_worker_runs_a_fork_join_workflow_and_stops_on_sigterm(
        self, client: DjangoWorkflowClient, workers: Workers
    ) -> None:
        for n in (1, 2, 3):
            client.submit(checkout, f"order-{n}", {"items": n})
        worker = workers.start("--concurrency", "4", "--worker-id", "w-1")

        for n in (1, 2, 3):
            assert client.wait(f"order-{n}", timeout=60).status == "completed", workers.log(0)
        assert [client.get_task_result(f"order-{n}", "total") for n in (1, 2, 3)] == [16, 27, 38]
        receipts = Receipt.objects.using(self.alias).order_by("order")
        assert [(r.order, r.amount) for r in receipts] == [(1, 16), (2, 27), (3, 38)]
        assert {r.written_by for r in receipts} == {f"pid {worker.pid}"}

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, workers.log(0)
        assert "worker w-1 stopped" in workers.log(0)

    def test_max_steps_stops_the_worker_by_itself(
        self, client: DjangoWorkflowClient, workers: Workers
    ) -> None:
        client.submit(checkout, "order-7", {"items": 7})

        worker = workers.start("--max-steps", "2", "--concurrency", "1")

        assert worker.wait(60) == 0, workers.log(0)
        assert "2 steps done" in workers.log(0)
        assert client.status("order-7").status != "completed"

    def test_killing_one_of_two_workers_loses_nothing_and_writes_each_checkpoint_once(
        self, client: DjangoWorkflowClient, workers: Workers
    ) -> None:
        orders = [f"order-{n}" for n in range(1, 7)]
        for n, instance_id in enumerate(orders, 1):
            client.submit(checkout, instance_id, {"items": n})
        slow = {"SAYIIR_TEST_STEP_SECONDS": "0.4"}
        options = ("--concurrency", "3", "--claim-ttl", "3")
        victim = workers.start(*options, "--worker-id", "victim", **slow)
        workers.start(*options, "--worker-id", "survivor", **slow)
        history = HistoryEntry.objects.using(self.alias)
        wait_until(
            lambda: history.filter(worker_id="victim", kind="task_completed").exists(),
            60,
            "the victim to complete a step",
        )

        victim.kill()
        victim.wait(30)

        for instance_id in orders:
            assert client.wait(instance_id, timeout=90).status == "completed"
        checkpoints = Counter(
            Checkpoint.objects.using(self.alias).values_list("instance__instance_id", "step_key")
        )
        assert set(checkpoints) == {(i, step) for i in orders for step in CHECKOUT_STEPS}
        assert set(checkpoints.values()) == {1}
        completions = Counter(
            history.filter(kind="task_completed").values_list("instance_id", "step_key")
        )
        assert completions == checkpoints
        assert sorted(Receipt.objects.using(self.alias).values_list("order", flat=True)) == list(
            range(1, 7)
        )
