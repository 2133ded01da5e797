"""Worker processes on one PostgreSQL: SIGKILL one, freeze one, and check the outcome.

Each worker is a real subprocess running ``Worker.run`` over ``PostgresBackend`` (see
``tests/worker_fleet.py``). Every step appends ``"<instance> <step> <attempt> <worker>
started|done"`` to the fleet's log, so the log shows exactly which step bodies ran even
after a SIGKILL. The database is read afterwards through ``PostgresBackend``.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_fleet import Fleet, started_counts, wait_until

from sayiir_core import Flow, task

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

STEPS = ["a", "b", "c", "d", "e"]
CLAIM_TTL = 1.5

APP = textwrap.dedent(
    f'''
    """Five steps that log, for the worker chaos tests."""

    import asyncio, os, signal, sys, time

    from sayiir_core import Flow, Worker, get_task_context, task
    from sayiir_core.backends.postgres import PostgresBackend

    LOG = os.environ["CHAOS_LOG"]
    WORKER = os.environ["CHAOS_WORKER"]
    STEP_SECONDS = float(os.environ.get("CHAOS_STEP_SECONDS", "0.05"))
    SLOW_STEP = os.environ.get("CHAOS_SLOW_STEP")


    def log(line):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


    def step(name):
        def body(done):
            context = get_task_context()
            where = f"{{context.instance_id}} {{name}} {{context.attempt}} {{WORKER}}"
            log(where + " started")
            time.sleep(3.0 if name == SLOW_STEP else STEP_SECONDS)
            log(where + " done")
            return done + [[name, WORKER]]

        return task(name)(body)


    flow = Flow("chaos")
    for name in {STEPS!r}:
        flow = flow.then(step(name))
    WORKFLOW = flow.build()


    async def main():
        backend = PostgresBackend(os.environ["CHAOS_URL"], schema=os.environ["CHAOS_SCHEMA"])
        worker = Worker(WORKER, backend, poll_interval=0.2, claim_ttl={CLAIM_TTL}, concurrency=4)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await worker.run([WORKFLOW], stop=stop)
        await backend.close()


    asyncio.run(main())
    '''
)


def _step(name: str) -> Callable[[list[Any]], list[Any]]:
    def body(done: list[Any]) -> list[Any]:
        raise AssertionError("the test process only submits; workers run the steps")

    return task(name)(body)


def _workflow() -> Any:
    flow = Flow("chaos")
    for name in STEPS:
        flow = flow.then(_step(name))
    return flow.build()


@pytest.fixture
def fleet(tmp_path: Path, postgres_schema: tuple[str, str]) -> Iterator[Fleet]:
    url, schema = postgres_schema
    fleet = Fleet(tmp_path, url, schema, APP)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_the_survivor_finishes_every_workflow_after_a_sigkill(fleet: Fleet) -> None:
    client = fleet.client()
    workflow = _workflow()
    instance_ids = [f"kill-{n}" for n in range(8)]
    for instance_id in instance_ids:
        client.submit(workflow, instance_id, [])
    doomed = fleet.start("doomed", CHAOS_STEP_SECONDS="0.2")

    # Let the doomed worker get well into its claimed instances, then kill it.
    wait_until(lambda: len(fleet.lines()) >= 6, 30, "the first steps to run")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    fleet.start("survivor")

    def all_completed() -> bool:
        return all(client.status(i).is_completed() for i in instance_ids)

    wait_until(all_completed, 60, "every instance to complete")

    for instance_id in instance_ids:
        output = client.status(instance_id).output
        assert [name for name, _ in output] == STEPS
    started = started_counts(fleet.lines())
    assert max(started.values()) <= 2, started  # only the interrupted step runs twice
    assert set(fleet.completed_counts(instance_ids).values()) == {1}
    assert {worker for i in instance_ids for _, worker in client.status(i).output} >= {"survivor"}
    client.close()


def test_a_frozen_worker_cannot_overwrite_a_step_taken_over_by_another(fleet: Fleet) -> None:
    client = fleet.client()
    client.submit(_workflow(), "frozen-1", [])
    frozen = fleet.start("frozen", CHAOS_SLOW_STEP="b")

    wait_until(lambda: "frozen-1 b 1 frozen started" in fleet.lines(), 30, "step b to start")
    os.kill(frozen.pid, signal.SIGSTOP)
    time.sleep(CLAIM_TTL + 0.5)  # the lease runs out while the worker is frozen
    fleet.start("rescuer", CHAOS_SLOW_STEP="none")
    wait_until(lambda: client.status("frozen-1").is_completed(), 60, "the rescue")
    os.kill(frozen.pid, signal.SIGCONT)
    # The frozen worker wakes up, finishes its copy of step b and tries to write it.
    wait_until(lambda: "frozen-1 b 1 frozen done" in fleet.lines(), 30, "the zombie's step b")
    time.sleep(0.5)

    output = client.status("frozen-1").output
    assert output[1] == ["b", "rescuer"]
    assert client.get_task_result("frozen-1", "b") == [["a", "frozen"], ["b", "rescuer"]]
    counts = fleet.completed_counts(["frozen-1"])
    assert counts[("frozen-1", "b")] == 1
    assert set(counts.values()) == {1}
    client.close()


def test_a_sigterm_finishes_the_running_step_and_hands_over(fleet: Fleet) -> None:
    client = fleet.client()
    client.submit(_workflow(), "graceful-1", [])
    worker = fleet.start("graceful", CHAOS_STEP_SECONDS="0.3")
    wait_until(lambda: len(fleet.lines()) >= 1, 30, "the first step")

    worker.terminate()  # SIGTERM: finish the running step, release the claim
    assert worker.wait(timeout=20) == 0
    assert client.status("graceful-1").status in ("in_progress", "running")
    fleet.start("next")
    wait_until(lambda: client.status("graceful-1").is_completed(), 30, "the next worker")
    started = started_counts(fleet.lines())
    assert max(started.values()) == 1, started  # a graceful stop re-runs nothing
    client.close()
