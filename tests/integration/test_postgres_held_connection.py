"""A durable run keeps one pooled connection for its statements, and lets go when needed.

``DurableRunner`` wraps each run in ``PostgresBackend.hold_connection()``: the create
and every commit reuse the connection the first statement got, instead of acquiring
one each. These tests hold the promises of ``backends/postgres/holds.py``: the hold
costs no other operation a connection (a pool exhausted by holds gets one back, a
waiter gets the held one as soon as its statement ends), and a held connection that
dies, or a run cancelled mid-statement, leaves the pool as it found it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from postgres_service import WireProxy

from sayiir_core import Flow
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.runtime import DurableRunner, LocalExecutor
from sayiir_core.workflow.workflow import Workflow

pytestmark = pytest.mark.postgres

Opener = Callable[..., Awaitable[PostgresBackend]]


@pytest.fixture
async def opener(postgres_schema: tuple[str, str]) -> AsyncIterator[Opener]:
    url, schema = postgres_schema
    opened: list[PostgresBackend] = []

    async def open_backend(**options: Any) -> PostgresBackend:
        backend = PostgresBackend(options.pop("url", url), schema=schema, **options)
        opened.append(backend)
        await backend.open()
        return backend

    yield open_backend
    for backend in opened:
        await backend.close()


def _chain(name: str, length: int) -> Workflow:
    flow = Flow(name)
    for n in range(length):
        flow = flow.then(lambda x: x + 1, name=f"step_{n}")
    return flow.build()


def _gated(name: str, *gates: asyncio.Event) -> Workflow:
    """One async step per gate, each waiting for its gate before returning x + 1."""
    flow = Flow(name)
    for n, gate in enumerate(gates):

        async def wait(x: int, gate: asyncio.Event = gate) -> int:
            await gate.wait()
            return x + 1

        flow = flow.then(wait, name=f"gate_{n}")
    return flow.build()


def _count_acquires(backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the backend pool's acquires from now on (the real pool still does them)."""
    pool = backend._session.pool()
    acquire = asyncpg.pool.Pool.acquire
    count = [0]

    def counting(self: asyncpg.pool.Pool, *args: Any, **kwargs: Any) -> Any:
        count[0] += self is pool
        return acquire(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.pool.Pool, "acquire", counting)
    return count


async def _until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def _lock_row(url: str, schema: str, instance_id: str) -> asyncpg.Connection:
    """A session of the test's own holding the instance's row lock, so commits wait."""
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN")
    await holder.execute(
        f'SELECT 1 FROM "{schema}".sayiir_instances WHERE instance_id = $1 FOR UPDATE',
        instance_id,
    )
    return holder


async def _commit_waits_on_lock(url: str) -> bool:
    watcher = await asyncpg.connect(url)
    try:
        waiting: int = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE '%sayiir_instances%'"
        )
        return waiting > 0
    finally:
        await watcher.close()


async def test_a_run_acquires_one_pooled_connection_for_all_its_statements(
    opener: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await opener()
    runner = DurableRunner(backend, executor=LocalExecutor())
    await runner.run(_chain("chain", 10), "warm-up", 0)
    acquires = _count_acquires(backend, monkeypatch)

    status = await runner.run(_chain("chain", 10), "measured", 0)

    assert status.output == 10
    assert acquires[0] == 1  # not 11: the create and ten commits share it


async def test_an_operation_finding_the_pool_exhausted_takes_a_held_connection_back(
    opener: Opener,
) -> None:
    backend = await opener(max_connections=1, min_connections=1, acquire_timeout_secs=2)
    gate = asyncio.Event()
    runner = DurableRunner(backend, executor=LocalExecutor())
    run = asyncio.create_task(runner.run(_gated("parked", gate), "held", 0))
    await _until(lambda: _created(backend, "held"))

    # The run holds the only connection while its step waits; this read must not wait
    # acquire_timeout_secs for it, nor fail.
    record = await asyncio.wait_for(backend.get_record("held"), 1.0)

    assert record is not None
    assert not run.done()
    gate.set()
    assert (await asyncio.wait_for(run, 10)).output == 1


async def _created(backend: PostgresBackend, instance_id: str) -> bool:
    return await backend.get_record(instance_id) is not None


async def test_a_held_connection_goes_to_an_operation_waiting_for_it(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    backend = await opener(max_connections=1, min_connections=1, acquire_timeout_secs=5)
    first, second = asyncio.Event(), asyncio.Event()
    runner = DurableRunner(backend, executor=LocalExecutor())
    run = asyncio.create_task(runner.run(_gated("waited", first, second), "busy", 0))
    await _until(lambda: _created(backend, "busy"))
    holder = await _lock_row(url, schema, "busy")
    try:
        first.set()  # the first step's commit now waits for the row lock, on the held connection
        await _until(lambda: _commit_waits_on_lock(url))
        reading = asyncio.create_task(backend.get_record("busy"))  # waits for the pool
        await asyncio.sleep(0.1)
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()

    # The commit is done and the run waits on its second step: the waiting read got the
    # connection then, not when the run ends.
    record = await asyncio.wait_for(reading, 2.0)
    assert record is not None
    assert not run.done()
    second.set()
    assert (await asyncio.wait_for(run, 10)).output == 2


async def test_a_run_whose_held_connection_dies_between_steps_goes_on(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    proxy = WireProxy()
    await proxy.start()
    try:
        backend = await opener(url=proxy.url(postgres_schema[0]), max_connections=1)
        gate = asyncio.Event()
        runner = DurableRunner(backend, executor=LocalExecutor())
        run = asyncio.create_task(runner.run(_gated("cut", gate), "cut", 0))
        await asyncio.sleep(0.3)  # created: the run holds its connection, waiting on the gate
        proxy.cut()
        gate.set()

        assert (await asyncio.wait_for(run, 20)).output == 1
    finally:
        await proxy.stop()


async def test_a_run_cancelled_mid_commit_leaves_the_pool_usable(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    backend = await opener(max_connections=1, min_connections=1, acquire_timeout_secs=5)
    gate = asyncio.Event()
    runner = DurableRunner(backend, executor=LocalExecutor())
    run = asyncio.create_task(runner.run(_gated("cancelled", gate), "cancelled", 0))
    await _until(lambda: _created(backend, "cancelled"))
    holder = await _lock_row(url, schema, "cancelled")
    try:
        gate.set()
        await _until(lambda: _commit_waits_on_lock(url))
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()

    # The one connection went back to the pool (asyncpg cancelled the statement on it).
    other = DurableRunner(backend, executor=LocalExecutor())
    assert (await asyncio.wait_for(other.run(_chain("after", 3), "after", 0), 10)).output == 3


async def test_a_hold_open_across_close_and_reopen_uses_the_new_pool(opener: Opener) -> None:
    backend = await opener()
    async with backend.hold_connection():
        assert await backend.get_record("nothing") is None  # the hold now keeps a connection
        await backend.close()
        await backend.open()

        # The old pool's connection is closed; the hold must not hand it out again.
        assert await backend.get_record("nothing") is None
    assert await backend.get_record("nothing") is None
