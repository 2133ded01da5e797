"""Chain continuation with real ``celery worker`` processes, Redis and PostgreSQL.

A step task that has checkpointed its step runs the instance's next step itself when
that is the only one ready and goes to the same queue, for up to ``continue_for``
seconds (``sayiir_celery/continuation.py``). The bridge app logs every publish (with
the instance and step it names), the start of every step task (``task <worker> <pid>``)
and of every step body, so these tests can tell how many messages an instance cost and
which steps one task ran.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from types import ModuleType

import pytest
from celery_fleet import Fleet, pool_children, wait_until
from conftest import loaded_app

from sayiir_core.workflow.workflow import Workflow

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def publishes(fleet: Fleet, instance_id: str) -> Counter[str]:
    """How many step messages naming each step of ``instance_id`` were published."""
    return Counter(
        line.split()[3]
        for line in fleet.lines()
        if line.startswith("publish ") and line.split()[2] == instance_id
    )


def steps_per_task(fleet: Fleet) -> list[list[str]]:
    """The step bodies each step task started, in order (``instance:step`` each)."""
    current: dict[str, list[str]] = {}
    tasks: list[list[str]] = []
    for line in fleet.lines():
        words = line.split()
        if words[0] == "task":
            current[words[2]] = []
            tasks.append(current[words[2]])
        elif words[-1] == "started" and words[3] in current:
            current[words[3]].append(f"{words[0]}:{words[1]}")
    return [steps for steps in tasks if steps]


def one_checkpoint_each(module: ModuleType, workflow: Workflow, instance_id: str) -> None:
    completed = Counter(
        event.step_key
        for event in module.bridge.client.history(instance_id)
        if event.kind == "task_completed"
    )
    assert completed == Counter(dict.fromkeys(workflow.tasks, 1))


def test_a_chain_goes_on_in_the_task_that_ran_its_first_step(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=2)
    client = app_module.bridge.client
    ids = [f"chain10-{i}" for i in range(3)]
    for instance_id in ids:
        client.submit(app_module.chain10, instance_id, 0)
    for instance_id in ids:
        assert client.result(instance_id, timeout=60) == 10
        one_checkpoint_each(app_module, app_module.chain10, instance_id)
    started = fleet.started()
    assert all(started[(i, f"bump{n}")] == 1 for i in ids for n in range(10)), started
    # One message per step without continuation (10 per instance); with it, the submit's
    # message and at most one per second of chain (a loaded machine may need one more).
    sent = {instance_id: sum(publishes(fleet, instance_id).values()) for instance_id in ids}
    assert all(1 <= count <= 3 for count in sent.values()), sent
    assert max(len(steps) for steps in steps_per_task(fleet)) >= 5


def test_budget_zero_sends_every_step_as_its_own_message(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=2, BRIDGE_CONTINUE_FOR="0")
    client = app_module.bridge.client
    client.submit(app_module.chain10, "chain10-zero", 0)
    assert client.result("chain10-zero", timeout=60) == 10
    one_checkpoint_each(app_module, app_module.chain10, "chain10-zero")
    sent = publishes(fleet, "chain10-zero")
    assert all(sent[f"bump{n}"] >= 1 for n in range(10)), sent
    assert [len(steps) for steps in steps_per_task(fleet)] == [1] * 10


def test_a_task_starts_no_step_once_its_budget_is_spent(
    fleet: Fleet, app_module: ModuleType
) -> None:
    """Steps of 0.4 s under the default 1 s budget: a task starts one at 0, 0.4 and
    0.8 s, and hands the fourth to the broker."""
    fleet.start("w1", pool="solo")
    client = app_module.bridge.client
    client.submit(app_module.paced, "paced-1", 0)
    assert client.result("paced-1", timeout=60) == 6
    one_checkpoint_each(app_module, app_module.paced, "paced-1")
    sizes = [len(steps) for steps in steps_per_task(fleet)]
    assert sum(sizes) == 6
    assert max(sizes) <= 3, sizes
    assert max(sizes) >= 2, sizes
    # A message per task (a copy the sweeper may send on a loaded machine starts none).
    assert sum(publishes(fleet, "paced-1").values()) >= len(sizes)


def test_fork_branches_go_out_as_messages_and_the_join_goes_on(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=1)
    fleet.start("w2", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    ids = [f"fork-{i}" for i in range(6)]
    for i, instance_id in enumerate(ids):
        client.submit(app_module.fork_join, instance_id, {"n": i})
    for i, instance_id in enumerate(ids):
        assert client.result(instance_id, timeout=60) == i * 110
        one_checkpoint_each(app_module, app_module.fork_join, instance_id)
        sent = publishes(fleet, instance_id)
        assert sent["left"] >= 1
        assert sent["right"] >= 1
    branch_workers = {
        line.split()[2] for line in fleet.lines() if line.split()[1:2] in (["left"], ["right"])
    }
    assert branch_workers == {"w1", "w2"}
    # The join is the one step its last branch's advance makes ready: that task runs it.
    assert any(steps[-1].endswith(":total") and len(steps) == 2 for steps in steps_per_task(fleet))


def test_the_next_step_on_another_queue_is_published(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.start("io", pool="solo", queues="io", BRIDGE_ROUTES="1")
    fleet.start("main", pool="solo", queues="celery", BRIDGE_ROUTES="1")
    with loaded_app(fleet, monkeypatch, BRIDGE_ROUTES="1") as module:
        client = module.bridge.client
        client.submit(module.hop, "hop-1", 2)
        assert client.result("hop-1", timeout=60) == 21
        one_checkpoint_each(module, module.hop, "hop-1")
    where = {line.split()[1]: line.split()[2] for line in fleet.lines() if line.endswith("started")}
    assert where == {"first": "main", "left": "io", "finish": "main"}
    assert publishes(fleet, "hop-1") == Counter({"first": 1, "left": 1, "finish": 1})


def _wait_for_continued_slow(fleet: Fleet, instance_id: str) -> int:
    """Wait until ``slow`` runs in the task that ran ``first``; that task's pid."""
    wait_until(lambda: fleet.started()[(instance_id, "slow")] == 1, 30, "slow to start")
    assert [f"{instance_id}:first", f"{instance_id}:slow"] in steps_per_task(fleet)
    assert publishes(fleet, instance_id) == Counter({"first": 1})
    return next(
        int(line.split()[3])
        for line in fleet.lines()
        if line.startswith(f"{instance_id} slow ") and line.endswith(" started")
    )


def test_pause_during_a_continued_chain_stops_it_at_the_step_boundary(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    client.submit(app_module.relay, "relay-pause", 1)
    _wait_for_continued_slow(fleet, "relay-pause")
    client.pause("relay-pause")
    fleet.open_gate("slow-relay-pause")
    wait_until(lambda: client.status("relay-pause").status == "paused", 30, "the pause")
    time.sleep(1.0)
    assert fleet.started()[("relay-pause", "finish")] == 0
    client.unpause("relay-pause")
    assert client.result("relay-pause", timeout=30) == 3
    one_checkpoint_each(app_module, app_module.relay, "relay-pause")


def test_cancel_during_a_continued_chain_stops_it_at_the_step_boundary(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    client.submit(app_module.relay, "relay-cancel", 1)
    _wait_for_continued_slow(fleet, "relay-cancel")
    client.cancel("relay-cancel")
    fleet.open_gate("slow-relay-cancel")
    wait_until(lambda: client.status("relay-cancel").status == "cancelled", 30, "the cancel")
    time.sleep(1.0)
    assert fleet.started()[("relay-cancel", "finish")] == 0


def test_sigkill_mid_continuation_runs_the_step_again_once(
    fleet: Fleet, app_module: ModuleType
) -> None:
    """The step the killed task was running was never sent as a message: the sweeper
    sends it once its lease has run out, as for a lost message."""
    worker = fleet.start("w1", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    client.submit(app_module.relay, "relay-kill", 1)
    victim = _wait_for_continued_slow(fleet, "relay-kill")
    assert victim in pool_children(worker.pid)
    os.kill(victim, signal.SIGKILL)
    fleet.open_gate("slow-relay-kill")
    assert client.result("relay-kill", timeout=60) == 3
    assert fleet.started()[("relay-kill", "slow")] == 2
    assert fleet.started()[("relay-kill", "first")] == 1
    one_checkpoint_each(app_module, app_module.relay, "relay-kill")
    assert publishes(fleet, "relay-kill")["slow"] >= 1  # the sweeper's copy
