"""A worker keeps finishing workflows while its database connections are cut again and again.

The worker talks to PostgreSQL through a TCP proxy that the test cuts every few hundred
milliseconds, as a database restart or a flaky network would. Every workflow must still
complete with the right output, and every step's checkpoint be written once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from postgres_service import WireProxy

from sayiir_core import AsyncWorkflowClient, Flow, Worker, Workflow
from sayiir_core.backends.postgres import PostgresBackend

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

WORKFLOWS = 40
STEPS = 6


def _add_one(x: int) -> int:
    return x + 1


async def _pause_then_add_one(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 1


def _chain() -> Flow:
    flow = Flow("drops")
    for n in range(STEPS):
        flow = flow.then(_add_one if n % 2 else _pause_then_add_one, name=f"s{n}")
    return flow


@contextlib.asynccontextmanager
async def worker_behind_a_proxy(
    postgres_schema: tuple[str, str], workflow: Workflow, **worker_options: Any
) -> AsyncIterator[tuple[WireProxy, AsyncWorkflowClient]]:
    """A worker reaching PostgreSQL through a proxy the test can cut; a direct client."""
    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    direct = PostgresBackend(url, schema=schema)
    flaky = PostgresBackend(proxy.url(url), schema=schema, max_size=4)
    stop = asyncio.Event()
    worker = Worker("flaky-worker", flaky, poll_interval=0.1, **worker_options)
    serving = asyncio.create_task(worker.run([workflow], stop=stop))
    try:
        yield proxy, AsyncWorkflowClient(direct)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
        await flaky.close()
        await direct.close()
        await proxy.stop()


async def test_workflows_complete_while_connections_keep_dropping(
    postgres_schema: tuple[str, str],
) -> None:
    workflow = _chain().build()
    running = worker_behind_a_proxy(postgres_schema, workflow, claim_ttl=5.0, concurrency=6)
    async with running as (proxy, client):
        for n in range(WORKFLOWS):
            await client.submit(workflow, f"drop-{n}", n)

        cuts = 0

        async def finished() -> bool:
            statuses = [await client.status(f"drop-{n}") for n in range(WORKFLOWS)]
            return all(status.is_finished() for status in statuses)

        async with asyncio.timeout(90):
            while not await finished():
                await asyncio.sleep(0.3)
                proxy.cut()
                cuts += 1
        assert cuts >= 3, "the run should have seen several connection drops"

        for n in range(WORKFLOWS):
            status = await client.status(f"drop-{n}")
            assert status.is_completed(), (status.status, status.error)
            assert status.output == n + STEPS
            completions = Counter(
                event.step_key
                for event in await client.history(f"drop-{n}")
                if event.kind == "task_completed"
            )
            assert completions == {f"s{k}": 1 for k in range(STEPS)}


async def test_after_an_outage_the_instance_is_handed_back_not_left_for_its_lease(
    postgres_schema: tuple[str, str],
) -> None:
    workflow = _chain().build()
    # A lease far longer than the test: only a hand-back lets the work go on in time.
    async with worker_behind_a_proxy(postgres_schema, workflow, claim_ttl=120.0) as (
        proxy,
        client,
    ):
        await client.submit(workflow, "outage-1", 0)
        async with asyncio.timeout(30):
            while "s1" not in {
                e.step_key for e in await client.history("outage-1") if e.kind == "task_completed"
            }:
                await asyncio.sleep(0.02)
        proxy.refusing = True  # the database is gone for a few seconds
        proxy.cut()
        await asyncio.sleep(4.0)
        proxy.refusing = False

        async with asyncio.timeout(30):  # well inside the 120 s lease
            while not (await client.status("outage-1")).is_finished():
                await asyncio.sleep(0.1)
        status = await client.status("outage-1")
        assert status.is_completed(), (status.status, status.error)
        assert status.output == STEPS
