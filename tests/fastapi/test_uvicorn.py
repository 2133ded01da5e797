"""A real ``uvicorn``: several processes on PostgreSQL run each step once; SIGTERM drains."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sayiir_core.testing.postgres import run_on_fresh_loop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _submit(url: str, workflow: str, instance_id: str, value: Any) -> None:
    response = httpx.post(
        f"{url}/sayiir/workflows/{workflow}/instances",
        json={"instance_id": instance_id, "input": value},
        timeout=30,
    )
    assert response.status_code == 201, response.text


def _result(url: str, instance_id: str) -> httpx.Response:
    deadline = time.monotonic() + 120
    while True:
        response = httpx.get(f"{url}/sayiir/instances/{instance_id}/result?timeout=20", timeout=40)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response


def _runs(log: Path) -> list[tuple[str, str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.mark.postgres
def test_two_uvicorn_workers_on_postgres_run_each_step_once(
    postgres_schema: tuple[str, str],
    start_uvicorn: Callable[..., Any],
    tmp_path: Path,
) -> None:
    url, schema = postgres_schema
    log = tmp_path / "runs.log"
    env = {
        "SAYIIR_TEST_DATABASE_URL": url,
        "SAYIIR_TEST_SCHEMA": schema,
        "SAYIIR_TEST_RUN_LOG": str(log),
        "SAYIIR_WORKERS": "2",  # two in-process workers in each of the two processes
    }
    server = start_uvicorn(env, workers=2)
    count = 30
    for number in range(count):
        _submit(server.url, "checkout", f"order-{number}", {"id": number, "amount": 1 + number})
    for number in range(count):
        response = _result(server.url, f"order-{number}")
        assert response.status_code == 200, response.text
        assert response.json()["output"] == f"order {number} shipped"
    server.stop_gracefully()

    runs = _runs(log)
    per_step = collections.Counter((instance, step) for _, instance, step in runs)
    assert len(per_step) == count * 3
    assert set(per_step.values()) == {1}, [key for key, n in per_step.items() if n > 1]
    # Both processes ran steps (the run log and the history agree on who did).
    processes = {pid for pid, _, _ in runs}
    assert len(processes) == 2, processes
    workers = _workers_that_ran(url, schema, [f"order-{n}" for n in range(count)])
    assert {worker.split(":")[1] for worker in workers} == processes


def _workers_that_ran(url: str, schema: str, instance_ids: list[str]) -> set[str]:
    from sayiir_core import AsyncWorkflowClient, PostgresBackend

    async def read() -> set[str]:
        async with PostgresBackend(url, schema=schema, max_size=2) as backend:
            client = AsyncWorkflowClient(backend)
            workers: set[str] = set()
            for instance_id in instance_ids:
                for event in await client.history(instance_id):
                    if event.kind == "task_completed" and event.worker_id:
                        workers.add(event.worker_id)
            return workers

    return run_on_fresh_loop(read())


def test_sigterm_lets_the_running_step_finish_and_releases_the_instance(
    start_uvicorn: Callable[..., Any], tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'drain.db'}"
    log = tmp_path / "runs.log"
    gate = tmp_path / "gate"
    env = {"SAYIIR_TEST_DATABASE_URL": database, "SAYIIR_TEST_RUN_LOG": str(log)}
    server = start_uvicorn(env)
    _submit(server.url, "gate_flow", "draining", {"file": str(gate)})
    deadline = time.monotonic() + 60
    while not Path(str(gate) + ".started").exists():
        assert time.monotonic() < deadline, "the gated step never started"
        time.sleep(0.05)

    # SIGTERM while the step runs; the step is let through during the grace period.
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None, "the server exited without waiting for the step"
    gate.touch()
    server.stop_gracefully()
    steps = [step for _, instance, step in _runs(log) if instance == "draining"]
    assert steps == ["gated"]  # it finished; nothing new started during the drain

    # The claim was released: a new server goes on at once (the lease is 300 s).
    again = start_uvicorn(env)
    response = _result(again.url, "draining")
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "through"
    assert [step for _, instance, step in _runs(log) if instance == "draining"] == [
        "gated",
        "after_gate",
    ]
    history = httpx.get(f"{again.url}/sayiir/instances/draining/history", timeout=10).json()
    completed = [event["step_key"] for event in history if event["kind"] == "task_completed"]
    assert completed == ["gated", "after_gate"]
    again.stop_gracefully()


@pytest.mark.postgres
def test_sigterm_after_the_grace_hands_the_running_step_to_another_process_at_once(
    postgres_schema: tuple[str, str],
    start_uvicorn: Callable[..., Any],
    tmp_path: Path,
) -> None:
    url, schema = postgres_schema
    log = tmp_path / "runs.log"
    gate = tmp_path / "gate"
    env = {
        "SAYIIR_TEST_DATABASE_URL": url,
        "SAYIIR_TEST_SCHEMA": schema,
        "SAYIIR_TEST_RUN_LOG": str(log),
    }
    first = start_uvicorn({**env, "SAYIIR_TEST_SHUTDOWN_GRACE": "0.3"})
    _submit(first.url, "gate_flow", "handed-over", {"file": str(gate)})
    _wait_for(lambda: _ran(log, "handed-over", "gated") == 1, "the gated step to start")
    # Another process is up meanwhile; the instance is the first's (lease: 300 s).
    second = start_uvicorn(env)
    first_pid = str(first.process.pid)

    # SIGTERM; the step outlives the 0.3 s grace: cancelled, and its claim released.
    first.stop_gracefully()
    _wait_for(lambda: _ran(log, "handed-over", "gated") == 2, "the step to run again")
    gate.touch()
    response = _result(second.url, "handed-over")
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "through"

    runs = [(pid, step) for pid, instance, step in _runs(log) if instance == "handed-over"]
    assert [step for _, step in runs] == ["gated", "gated", "after_gate"]
    assert runs[0][0] == first_pid  # uvicorn with one worker serves in its own process
    assert {pid for pid, _ in runs[1:]} == {str(second.process.pid)}
    history = httpx.get(f"{second.url}/sayiir/instances/handed-over/history", timeout=10).json()
    completed = [event["step_key"] for event in history if event["kind"] == "task_completed"]
    assert completed == ["gated", "after_gate"]  # each checkpoint written once
    second.stop_gracefully()


def _ran(log: Path, instance_id: str, step: str) -> int:
    return sum(1 for _, instance, name in _runs(log) if (instance, name) == (instance_id, step))


def _wait_for(predicate: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
