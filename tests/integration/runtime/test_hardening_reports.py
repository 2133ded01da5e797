"""A worker says what it leaves alone, and how storage trouble goes (issue 10)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from postgres_service import WireProxy

from sayiir_core import Backend, Flow, WaitTimeoutError, Worker, WorkflowClient, task
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.runtime.worker_mismatches import MismatchReporter

from .conftest import HandleStarter
from .helpers import wait_until


def _definition(timeout: float) -> Flow:
    @task("step", timeout=timeout)
    def step(x: int) -> int:
        return x + 1

    return Flow("versioned").then(step)


def test_a_worker_names_once_each_instance_of_another_definition(
    durable_backend: Backend,
    start_worker: HandleStarter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MismatchReporter, "EVERY", 0.05)
    old, new = _definition(10).build(), _definition(20).build()
    assert old.definition_hash != new.definition_hash
    client = WorkflowClient(durable_backend)
    client.submit(old, "old-1", 1)
    client.submit(old, "old-2", 2)
    with caplog.at_level(logging.WARNING, logger="sayiir.worker"):
        start_worker("w-new", [new])
        wait_until(
            lambda: (
                "[old-2] not run by worker w-new" in caplog.text
                and "[old-1] not run by worker w-new" in caplog.text
            ),
            what="the warnings",
        )
        time.sleep(0.5)  # ten more looks: still one line per instance
    lines = [r.getMessage() for r in caplog.records if "not run by worker" in r.getMessage()]
    assert len(lines) == 2, lines
    assert old.definition_hash[:12] in lines[0]
    assert "allow_definition_change=True" in lines[0]
    # The status tells which definition the instance waits for.
    status = client.status("old-1")
    assert status.definition_hash == old.definition_hash
    assert status.status == "in_progress"


@pytest.mark.postgres
async def test_a_database_outage_is_one_line_lost_and_one_line_back(
    postgres_schema: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    backend = PostgresBackend(proxy.url(url), schema=schema, max_size=2)
    workflow = Flow("outage-log").then(lambda x: x).build()
    stop = asyncio.Event()
    worker = Worker("w-outage", backend, poll_interval=0.02)
    await backend.open()  # the schema exists before the outage
    with caplog.at_level(logging.DEBUG, logger="sayiir"):
        serving = asyncio.create_task(worker.run([workflow], stop=stop))
        try:
            await asyncio.sleep(0.5)
            proxy.refusing = True  # the database is gone for two seconds
            proxy.cut()
            await asyncio.sleep(2.0)
            proxy.refusing = False
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)
            await backend.close()
            await proxy.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    worker_lines = [r.getMessage() for r in loud if r.name == "sayiir.worker"]
    # Before: ~750 lines with tracebacks. Now the worker says: lost, then back.
    assert len(worker_lines) == 2, worker_lines
    assert "storage unreachable" in worker_lines[0]
    assert "storage is back" in worker_lines[1]
    # No traceback from any sayiir logger (the backend logs its own reconnects, one
    # line each).
    sayiir_lines = [r for r in loud if r.name.startswith("sayiir")]
    assert all(r.exc_info is None for r in sayiir_lines), [r.getMessage() for r in sayiir_lines]
    assert len(sayiir_lines) < 30, [r.getMessage() for r in sayiir_lines]


def test_wait_on_a_never_served_instance_says_no_worker_picked_it_up(
    durable_backend: Backend,
) -> None:
    client = WorkflowClient(durable_backend)
    client.submit(Flow("unserved").then(lambda x: x).build(), "unserved-1", 1)
    with pytest.raises(WaitTimeoutError, match="no worker has picked it up yet") as caught:
        client.wait("unserved-1", timeout=0.05)
    assert "goes on running" not in str(caught.value)
