"""Who opens and closes what: context managers and the one ownership rule.

Whoever creates or opens a backend closes it. A client or worker handed a backend uses
it and leaves it open; a client that created its backend (``from_url``) closes it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Backend,
    BackendError,
    Flow,
    SqliteBackend,
    Worker,
    Workflow,
    WorkflowClient,
)
from sayiir_core.runtime.loop_thread import run_sync


def _flow() -> Workflow:
    return Flow("life").then(lambda x: x + 1, name="inc").build()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # an absolute path: four slashes in all


async def test_async_with_a_handed_backend_leaves_it_open(durable_backend: Backend) -> None:
    async with AsyncWorkflowClient(durable_backend) as client:
        await client.submit(_flow(), "l-1", 1)

    # Still open for its owner (and for anyone else it is shared with).
    record = await durable_backend.get_record("l-1")
    assert record is not None
    assert (await AsyncWorkflowClient(durable_backend).status("l-1")).status == "in_progress"


async def test_aclose_leaves_a_handed_backend_open(durable_backend: Backend) -> None:
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(_flow(), "l-2", 1)

    await client.aclose()

    assert await durable_backend.get_record("l-2") is not None


async def test_a_client_from_a_url_closes_the_backend_it_created(tmp_path: Path) -> None:
    async with AsyncWorkflowClient.from_url(_sqlite_url(tmp_path / "own.db")) as client:
        await client.submit(_flow(), "l-3", 1)
        backend = client.backend
        assert isinstance(backend, SqliteBackend)

    with pytest.raises(BackendError, match="not open"):
        await backend.get_record("l-3")
    async with SqliteBackend(tmp_path / "own.db") as reopened:  # it was stored, though
        assert await reopened.get_record("l-3") is not None


async def test_entering_the_client_opens_the_backend(tmp_path: Path) -> None:
    async with AsyncWorkflowClient.from_url(_sqlite_url(tmp_path / "entered.db")) as client:
        # Usable directly: entering opened it, no client call needed first.
        assert await client.backend.get_record("nothing") is None


async def test_a_closed_client_refuses_calls(durable_backend: Backend) -> None:
    client = AsyncWorkflowClient(durable_backend)
    await client.aclose()
    await client.aclose()  # twice is harmless

    with pytest.raises(RuntimeError, match="closed"):
        await client.status("anything")
    with pytest.raises(RuntimeError, match="closed"):
        await client.submit(_flow(), "l-4", 1)


async def test_a_client_whose_backend_fails_to_open_closes_what_it_created(
    tmp_path: Path,
) -> None:
    client = AsyncWorkflowClient.from_url(_sqlite_url(tmp_path))  # a directory, not a file

    with pytest.raises(BackendError):
        async with client:
            pass

    with pytest.raises(RuntimeError, match="closed"):
        await client.status("anything")


def test_from_url_refuses_a_bad_url_at_once() -> None:
    with pytest.raises(BackendError, match="unsupported backend URL scheme"):
        AsyncWorkflowClient.from_url("mysql://somewhere/db")
    with pytest.raises(BackendError, match="unsupported backend URL scheme"):
        WorkflowClient.from_url("mysql://somewhere/db")


def test_with_a_sync_client_and_a_handed_backend(durable_backend: Backend) -> None:
    with WorkflowClient(durable_backend) as client:
        client.submit(_flow(), "s-1", 1)

    assert run_sync(durable_backend.get_record("s-1")) is not None
    with pytest.raises(RuntimeError, match="closed"):
        client.status("s-1")


def test_with_a_sync_client_from_a_url(tmp_path: Path) -> None:
    with WorkflowClient.from_url(
        _sqlite_url(tmp_path / "sync.db"), conflict_policy="fail"
    ) as client:
        client.submit(_flow(), "s-2", 1)
        backend = client.backend

    with pytest.raises(BackendError, match="not open"):
        run_sync(backend.get_record("s-2"))


def test_with_a_worker_handle_shuts_the_worker_down_and_joins_it(
    durable_backend: Backend,
) -> None:
    workflow = _flow()
    client = WorkflowClient(durable_backend)
    with Worker("ctx", durable_backend, poll_interval=0.02).start([workflow]) as handle:
        assert handle.is_alive()
        client.submit(workflow, "w-1", 1)
        assert client.result("w-1", timeout=10) == 2

    assert not handle.is_alive()
    assert handle.error is None
    # The worker was handed the backend: it is still open.
    assert client.status("w-1").is_completed()


def test_leaving_a_worker_block_on_an_error_still_stops_the_worker(
    durable_backend: Backend,
) -> None:
    handle = Worker("boom", durable_backend, poll_interval=0.02).start([_flow()])
    with pytest.raises(ZeroDivisionError), handle:
        _ = 1 / 0
    assert not handle.is_alive()


async def test_a_worker_leaves_a_handed_backend_open(durable_backend: Backend) -> None:
    workflow = _flow()
    stop = asyncio.Event()
    run = asyncio.create_task(
        Worker("async-ctx", durable_backend, poll_interval=0.02).run([workflow], stop=stop)
    )
    client = AsyncWorkflowClient(durable_backend)
    await client.submit(workflow, "w-2", 1)
    assert await client.result("w-2", timeout=10) == 2
    stop.set()
    await asyncio.wait_for(run, 10)

    assert await durable_backend.get_record("w-2") is not None
