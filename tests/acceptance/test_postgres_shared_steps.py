"""Fork branches spread over worker processes on one PostgreSQL, and survive their loss.

The instance's owner (the orchestrator) runs one branch and queues the others; other
worker processes claim them. Branch bodies wait until all three have started, so that
the test does not depend on how fast a worker process comes up. The workers are real
subprocesses (``tests/worker_fleet.py``); each branch body logs ``"<instance> <branch>
<attempt> <worker> started|done"``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_fleet import Fleet, started_counts, wait_until

from sayiir_core import Flow, WorkflowClient, task

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

BRANCHES = ["left", "middle", "right"]
CLAIM_TTL = 1.5

APP = textwrap.dedent(
    f'''
    """A three-branch fork whose branches log where they ran."""

    import asyncio, os, signal, time

    from sayiir_core import Flow, Worker, get_task_context, task
    from sayiir_core.backends.postgres import PostgresBackend

    LOG = os.environ["CHAOS_LOG"]
    WORKER = os.environ["CHAOS_WORKER"]
    BRANCH_SECONDS = float(os.environ.get("CHAOS_BRANCH_SECONDS", "1.0"))


    def log(line):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


    def wait_for_all_branches(instance_id):
        # An orchestrator with one slot runs two branches at once at most: waiting until
        # all three have started makes sure another worker took one, however slowly it
        # came up.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(LOG) as lines:
                started = [
                    line for line in lines
                    if line.startswith(instance_id + " ") and line.rstrip().endswith(" started")
                ]
            if len(started) >= {len(BRANCHES)}:
                return
            time.sleep(0.05)


    def branch(name):
        def body(x):
            context = get_task_context()
            where = f"{{context.instance_id}} {{name}} {{context.attempt}} {{WORKER}}"
            log(where + " started")
            wait_for_all_branches(context.instance_id)
            time.sleep(BRANCH_SECONDS)
            log(where + " done")
            return [name, WORKER, x]

        return task(name)(body)


    @task("gather")
    def gather(results):
        context = get_task_context()
        log(f"{{context.instance_id}} gather {{context.attempt}} {{WORKER}} started")
        return sorted(results.values())


    fork = Flow("fanout").fork()
    for name in {BRANCHES!r}:
        fork = fork.branch(branch(name))
    WORKFLOW = fork.join(gather).build()


    async def main():
        backend = PostgresBackend(os.environ["CHAOS_URL"], schema=os.environ["CHAOS_SCHEMA"])
        concurrency = int(os.environ.get("CHAOS_CONCURRENCY", "4"))
        worker = Worker(
            WORKER, backend, poll_interval=0.2, claim_ttl={CLAIM_TTL}, concurrency=concurrency
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await worker.run([WORKFLOW], stop=stop)
        await backend.close()


    asyncio.run(main())
    '''
)


def _workflow() -> Any:
    def stub(name: str) -> Any:
        def body(x: Any) -> Any:
            raise AssertionError("the test process only submits; workers run the steps")

        return task(name)(body)

    fork = Flow("fanout").fork()
    for name in BRANCHES:
        fork = fork.branch(stub(name))
    return fork.join(stub("gather")).build()


@pytest.fixture
def fleet(tmp_path: Path, postgres_schema: tuple[str, str]) -> Iterator[Fleet]:
    url, schema = postgres_schema
    fleet = Fleet(tmp_path, url, schema, APP)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _steal_a_branch(
    fleet: Fleet, client: WorkflowClient, instance_id: str, thief: str
) -> tuple[subprocess.Popen[str], str]:
    """An orchestrator with one slot runs two branches; worker ``thief`` takes the third.

    Returns the thief's process and the branch it took, once that branch has started.
    """
    fleet.start("orchestrator", CHAOS_CONCURRENCY="1", CHAOS_BRANCH_SECONDS="1.5")
    client.submit(_workflow(), instance_id, 1)
    wait_until(lambda: len(fleet.lines()) >= 2, 30, "the orchestrator's branches")
    process = fleet.start(thief)
    marker = f" {thief} started"
    wait_until(lambda: any(marker in line for line in fleet.lines()), 30, "a steal")
    (branch,) = [line.split()[1] for line in fleet.lines() if marker in line]
    return process, branch


def _ran_on(lines: list[str], instance_id: str, branch: str) -> list[str]:
    """The workers on which a branch body started, in order."""
    return [
        line.split()[3]
        for line in lines
        if line.startswith(f"{instance_id} {branch} ") and line.endswith(" started")
    ]


def test_branches_of_one_fork_run_on_different_workers_and_join_once(fleet: Fleet) -> None:
    # One slot each for instances and shared steps: the orchestrator runs one branch and
    # at most one shared one, so the third must go to the other worker.
    fleet.start("orchestrator", CHAOS_CONCURRENCY="1")
    client = fleet.client()
    client.submit(_workflow(), "spread-1", 7)
    wait_until(lambda: any("spread-1 left" in line for line in fleet.lines()), 30, "a branch")
    fleet.start("helper")
    wait_until(lambda: client.status("spread-1").is_completed(), 60, "the join")

    output = client.status("spread-1").output
    assert [name for name, _, _ in output] == BRANCHES
    assert all(value == 7 for _, _, value in output)
    assert {worker for _, worker, _ in output} == {"orchestrator", "helper"}
    lines = fleet.lines()
    assert set(started_counts(lines).values()) == {1}  # every body ran once: no crash here
    assert set(fleet.completed_counts(["spread-1"]).values()) == {1}
    history = client.history("spread-1")
    ran = {e.step_key: e.worker_id for e in history if e.kind == "task_completed"}
    assert {ran[branch] for branch in BRANCHES} == {"orchestrator", "helper"}
    client.close()


def test_a_branch_on_a_killed_worker_is_taken_over_after_its_lease(fleet: Fleet) -> None:
    client = fleet.client()
    doomed, lost = _steal_a_branch(fleet, client, "kill-1", "doomed")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()

    wait_until(lambda: client.status("kill-1").is_completed(), 60, "the takeover")

    output = client.status("kill-1").output
    assert [name for name, _, _ in output] == BRANCHES
    assert {worker for _, worker, _ in output} == {"orchestrator"}
    started = started_counts(fleet.lines())
    assert started[("kill-1", lost)] == 2  # the killed worker's copy, then the takeover
    assert max(count for key, count in started.items() if key[1] != lost) == 1
    assert set(fleet.completed_counts(["kill-1"]).values()) == {1}
    client.close()


def test_a_frozen_worker_cannot_overwrite_a_branch_taken_over(fleet: Fleet) -> None:
    client = fleet.client()
    frozen, taken = _steal_a_branch(fleet, client, "frozen-1", "frozen")
    os.kill(frozen.pid, signal.SIGSTOP)

    wait_until(lambda: client.status("frozen-1").is_completed(), 60, "the takeover")
    os.kill(frozen.pid, signal.SIGCONT)
    # The frozen worker wakes up, finishes its copy of the branch and tries to store it.
    done = f"frozen-1 {taken} 1 frozen done"
    wait_until(lambda: done in fleet.lines(), 30, "the zombie's branch")
    time.sleep(0.5)

    assert client.get_task_result("frozen-1", taken) == [taken, "orchestrator", 1]
    assert _ran_on(fleet.lines(), "frozen-1", taken) == ["frozen", "orchestrator"]
    assert set(fleet.completed_counts(["frozen-1"]).values()) == {1}
    client.close()
