"""The storage gauges (``sayiir.instances``, ``sayiir.ready.*``) and counted takeovers
(of instances and shared steps), read through the SDK's ``InMemoryMetricReader``
(tests/telemetry_capture.py)."""

from __future__ import annotations

import asyncio
import time

from telemetry_capture import Captured, installed

from sayiir_core import AsyncWorkflowClient, Flow, InMemoryBackend, Status, Worker
from sayiir_core.backends.base import ConflictPolicy, NewInstance, StepWrite
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.telemetry.gauges import StatsReporter
from sayiir_core.telemetry.instances import count_step_takeovers

ATTR_STATUS = "sayiir.instance.status"
HOUR = 3600.0


def double(value: int) -> int:
    return value * 2


SERVED = Flow("served").then(double).build()
NOT_SERVED = Flow("not-served").then(double).build()


def _by_status(captured: Captured) -> dict[str, float]:
    points = captured.metric_points().get("sayiir.instances", [])
    return {point.attributes[ATTR_STATUS]: point.value for point in points}


def _gauge(captured: Captured, name: str) -> list[float]:
    return [point.value for point in captured.metric_points().get(name, [])]


async def test_the_gauges_show_what_the_backend_counts() -> None:
    backend = InMemoryBackend()
    client = AsyncWorkflowClient(backend)
    for number in range(3):
        await client.submit(NOT_SERVED, f"waiting-{number}", number)
    an_hour_ago = NewInstance("old", "not-served", "h", b"1", Status.PENDING, time.time() - HOUR)
    await backend.create(an_hour_ago, ConflictPolicy.FAIL)
    claim = await backend.claim("waiting-0", "w1", 30.0, time.time())
    write = StepWrite(status=Status.COMPLETED, control={}, now=time.time(), output=b"0")
    await backend.commit("waiting-0", claim.token, write)

    with installed() as captured:
        reporter = StatsReporter(backend)
        await reporter.refresh()
        by_status = _by_status(captured)
        backlog = _gauge(captured, "sayiir.ready.backlog")
        oldest = _gauge(captured, "sayiir.ready.oldest_age")
        reporter.stop()
        after_stop = captured.metric_points()

    counted = await backend.count_by_status()
    assert by_status == {status.value: counted.get(status, 0) for status in Status}
    assert by_status["pending"] == 3
    assert by_status["completed"] == 1
    assert backlog == [3]
    assert len(oldest) == 1
    assert HOUR <= oldest[0] < 2 * HOUR  # the instance submitted an hour ago
    assert "sayiir.instances" not in after_stop  # a stopped reporter's counts are dropped


async def test_a_worker_reports_its_backend_while_it_runs() -> None:
    backend = InMemoryBackend()
    await AsyncWorkflowClient(backend).submit(NOT_SERVED, "left-alone", 1)
    stop = asyncio.Event()
    with installed() as captured:
        worker = Worker("w1", backend, poll_interval=0.05)
        running = asyncio.create_task(worker.run([SERVED], stop=stop))
        for _ in range(200):  # the worker reads the counts as it starts
            if _gauge(captured, "sayiir.ready.backlog"):
                break
            await asyncio.sleep(0.02)
        backlog = _gauge(captured, "sayiir.ready.backlog")
        pending = _by_status(captured).get("pending")
        stop.set()
        await running
        after_stop = _gauge(captured, "sayiir.ready.backlog")

    assert backlog == [1]  # the instance of a workflow it does not serve waits
    assert pending == 1
    assert after_stop == []


async def test_a_worker_counts_the_instances_it_takes_over_from_a_dead_owner() -> None:
    backend = InMemoryBackend()
    client = AsyncWorkflowClient(backend)
    await client.submit(SERVED, "cut-off", 1)
    await client.submit(SERVED, "fresh", 2)
    # Another worker started "cut-off" long ago and died: its lease ran out at 1.0.
    claim = await backend.claim("cut-off", "dead-worker", 1.0, 0.0)
    await backend.commit("cut-off", claim.token, StepWrite(Status.RUNNING, {}, now=0.5))
    stop = asyncio.Event()
    with installed() as captured:
        running = asyncio.create_task(
            Worker("w1", backend, poll_interval=0.05).run([SERVED], stop=stop)
        )
        for instance_id in ("cut-off", "fresh"):
            assert (await client.wait(instance_id, timeout=30)).status == "completed"
        stop.set()
        await running
        taken_over = captured.total("sayiir.leases.taken_over", **{"sayiir.workflow.id": "served"})

    assert taken_over == 1  # "fresh" never ran elsewhere


async def test_shared_steps_claimed_after_their_lease_ran_out_count_as_takeovers() -> None:
    backend = InMemoryBackend()
    await backend.create(
        NewInstance("i-1", "served", "h", b"1", Status.PENDING, 0.0), ConflictPolicy.FAIL
    )
    await backend.claim("i-1", "orchestrator", HOUR, 0.0)
    tickets = [StepTicket(StepRef("i-1", key, 1), "served", "h", b"1", 3, 0.0) for key in "bc"]
    await backend.publish_steps(tickets)
    # A worker took step "b" and died: its lease ran out at 1.0.
    await backend.claim_step(StepRef("i-1", "b", 1), "dead-worker", 1.0, 0.0)

    with installed() as captured:
        claims = await backend.claim_steps("w1", {"served": "h"}, 30.0, 2.0, 10)
        count_step_takeovers(claims)
        taken_over = captured.total("sayiir.leases.taken_over", **{"sayiir.workflow.id": "served"})

    assert sorted(claim.ticket.ref.step_key for claim in claims) == ["b", "c"]
    assert taken_over == 1  # "c" was claimed for the first time
