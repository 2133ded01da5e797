"""``sayiir_celery`` with real ``celery worker`` processes, Redis and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections import Counter
from types import ModuleType

import pytest
from celery_fleet import Fleet, TcpProxy, pool_children, wait_until
from conftest import REDIS_DB, loaded_app

from sayiir_celery import STEP_TASK, StepMessage
from sayiir_celery.routing import Router
from sayiir_core.testing.postgres import service_unavailable

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def completed_counts(module: ModuleType, instance_ids: list[str]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for instance_id in instance_ids:
        for event in module.bridge.client.history(instance_id):
            if event.kind == "task_completed" and event.step_key is not None:
                counts[(instance_id, event.step_key)] += 1
    return counts


def test_fork_join_workflows_over_two_worker_processes(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=1)
    fleet.start("w2", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    ids = [f"order-{i}" for i in range(20)]
    for i, instance_id in enumerate(ids):
        client.submit(app_module.fork_join, instance_id, {"n": i})
    for i, instance_id in enumerate(ids):
        assert client.result(instance_id, timeout=60) == i * 10 + i * 100
    steps = ("start", "left", "right", "total")
    assert completed_counts(app_module, ids) == Counter(
        {(instance_id, step): 1 for instance_id in ids for step in steps}
    )
    # Without a failure every step also starts once. (Duplicate starts used to happen
    # under load: an advance could take the instance from a live holder, and the one it
    # took it from re-queued a step the other had just checkpointed, so a copy of that
    # step's message, sent again by the sweeper, ran it a second time.)
    assert fleet.started() == Counter({(i, s): 1 for i in ids for s in steps})
    branch_workers = {
        line.split()[2] for line in fleet.lines() if line.split()[1:2] in (["left"], ["right"])
    }
    assert branch_workers == {"w1", "w2"}


def test_sigkill_mid_step_runs_it_again_once_after_its_lease(
    fleet: Fleet, app_module: ModuleType
) -> None:
    worker = fleet.start("w1", pool="prefork", concurrency=1)
    client = app_module.bridge.client
    client.submit(app_module.gated, "kill-me", 1)
    wait_until(lambda: fleet.started()[("kill-me", "slow")] == 1, 30, "the step to start")
    victim = int(next(line.split()[3] for line in fleet.lines() if line.endswith(" started")))
    assert victim in pool_children(worker.pid)
    os.kill(victim, signal.SIGKILL)
    fleet.open_gate("slow-kill-me")
    assert client.result("kill-me", timeout=60) == 3
    assert fleet.started()[("kill-me", "slow")] == 2
    assert completed_counts(app_module, ["kill-me"]) == Counter(
        {("kill-me", "slow"): 1, ("kill-me", "finish"): 1}
    )


def test_the_same_message_twice_while_the_first_runs_runs_once(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="prefork", concurrency=2)
    bridge = app_module.bridge
    bridge.client.submit(app_module.gated, "dup", 1)
    wait_until(lambda: fleet.started()[("dup", "slow")] == 1, 30, "the step to start")
    copy = StepMessage("dup", "slow", 1, "gated", app_module.gated.definition_hash)
    bridge.app.send_task(STEP_TASK, args=[copy.to_json()], serializer="json")
    wait_until(lambda: "dropped" in fleet.output("w1"), 30, "the copy to be dropped")
    fleet.open_gate("slow-dup")
    assert bridge.client.result("dup", timeout=30) == 3
    assert fleet.started()[("dup", "slow")] == 1


def test_durable_delay_and_retry_backoff_never_use_eta(
    fleet: Fleet, app_module: ModuleType
) -> None:
    fleet.start("w1", pool="threads", concurrency=2)
    client = app_module.bridge.client
    client.submit(app_module.timed, "later", 5)
    assert client.result("later", timeout=60) == 6
    assert fleet.started()[("later", "flaky")] == 2
    publishes = [line for line in fleet.lines() if line.startswith("publish ")]
    assert len(publishes) >= 3  # flaky twice, finish
    assert all(line.endswith("eta None countdown None") for line in publishes), publishes
    kinds = [event.kind for event in client.history("later")]
    assert "retry_scheduled" in kinds
    assert "timer_fired" in kinds or "timer_started" in kinds


def test_steps_go_to_the_queue_of_their_tags(fleet: Fleet, app_module: ModuleType) -> None:
    fleet.start("io", pool="solo", queues="io", BRIDGE_ROUTES="1")
    fleet.start("cpu", pool="solo", queues="cpu", BRIDGE_ROUTES="1")
    fleet.start("main", pool="solo", queues="celery", BRIDGE_ROUTES="1")
    app_module.bridge.router = _routed(app_module)
    client = app_module.bridge.client
    client.submit(app_module.fork_join, "routed", {"n": 2})
    assert client.result("routed", timeout=60) == 220
    where = {line.split()[1]: line.split()[2] for line in fleet.lines() if line.endswith("started")}
    assert where == {"start": "main", "left": "io", "right": "cpu", "total": "main"}


def test_cancel_while_queued_drops_the_message(fleet: Fleet, app_module: ModuleType) -> None:
    fleet.start("w1", pool="solo")
    client = app_module.bridge.client
    client.submit(app_module.gated, "busy", 1)  # occupies the only worker process
    wait_until(lambda: fleet.started()[("busy", "slow")] == 1, 30, "the blocker to start")
    client.submit(app_module.gated, "doomed", 1)  # its message queues behind it
    assert client.cancel("doomed").status == "cancelled"
    fleet.open_gate("slow-busy")
    fleet.open_gate("slow-doomed")
    assert client.result("busy", timeout=30) == 3
    wait_until(lambda: "dropped" in fleet.output("w1"), 30, "the cancelled step's message")
    assert fleet.started()[("doomed", "slow")] == 0
    assert client.status("doomed").status == "cancelled"


def test_pause_holds_the_next_step_until_unpause(fleet: Fleet, app_module: ModuleType) -> None:
    fleet.start("w1", pool="threads", concurrency=2)
    client = app_module.bridge.client
    client.submit(app_module.gated, "held", 1)
    wait_until(lambda: fleet.started()[("held", "slow")] == 1, 30, "the step to start")
    client.pause("held")
    fleet.open_gate("slow-held")
    wait_until(lambda: client.status("held").status == "paused", 30, "the pause to settle")
    time.sleep(1.0)
    assert fleet.started()[("held", "finish")] == 0
    client.unpause("held")
    assert client.result("held", timeout=30) == 3
    assert completed_counts(app_module, ["held"]) == Counter(
        {("held", "slow"): 1, ("held", "finish"): 1}
    )


def _routed(module: ModuleType) -> Router:
    return Router(queues_by_tag={"io": "io", "cpu": "cpu"}, transport="redis")


@pytest.mark.chaos
def test_submit_with_the_broker_down_is_dispatched_once_it_is_back(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy(("127.0.0.1", 6379))
    proxy.start()
    fleet.broker = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
    try:
        fleet.start("w1", pool="threads", concurrency=2)
        with loaded_app(fleet, monkeypatch) as module:
            client = module.bridge.client
            proxy.stop()
            status = client.submit(module.fork_join, "outage", {"n": 1})
            assert status.status == "in_progress"
            time.sleep(3.0)  # longer than the re-dispatch time: the sweeper tries too
            assert fleet.started()[("outage", "start")] == 0
            proxy.start()
            assert client.result("outage", timeout=90) == 110
            assert fleet.started()[("outage", "start")] == 1
    finally:
        proxy.stop()


def test_rabbitmq_smoke(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as error:
        service_unavailable(f"RabbitMQ is not reachable at 127.0.0.1:5672 ({error})")
    queue = f"sayiir-test-{secrets.token_hex(4)}"
    fleet.broker = "amqp://guest:guest@127.0.0.1:5672//"
    fleet.start("w1", pool="prefork", concurrency=2, BRIDGE_DEFAULT_QUEUE=queue)
    with loaded_app(fleet, monkeypatch, BRIDGE_DEFAULT_QUEUE=queue) as module:
        try:
            for i in range(3):
                module.bridge.client.submit(module.fork_join, f"rabbit-{i}", {"n": i})
            for i in range(3):
                assert module.bridge.client.result(f"rabbit-{i}", timeout=60) == i * 110
        finally:
            fleet.stop_all()
            with module.app.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)
