"""SQLite's write lock held by another process: retried, never raised, never blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from django.db import connections

from sayiir_core import ConflictPolicy, Status
from sayiir_core.backends import NewInstance
from sayiir_django.backend import DjangoBackend

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]

HOLD = 1.5


@pytest.fixture
def impatient_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """New connections on "default" give up on the write lock after 50 ms, so "database
    is locked" reaches the backend (as it does under any timeout, or at once for a
    DEFERRED transaction that finds the lock taken)."""
    options = dict(connections.settings["default"]["OPTIONS"], timeout=0.05)
    monkeypatch.setitem(connections.settings["default"], "OPTIONS", options)


def hold_the_write_lock(path: str, seconds: float, taken: threading.Event) -> None:
    """Another process's writer: hold SQLite's write lock for ``seconds``."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        holder.execute("COMMIT")
    finally:
        holder.close()


def new(instance_id: str) -> NewInstance:
    return NewInstance(instance_id, "wf", "h", b"1", Status.PENDING, time.time())


@pytest.mark.usefixtures("impatient_sqlite")
async def test_a_locked_database_is_retried_without_blocking_the_event_loop() -> None:
    backend = DjangoBackend("default")
    await backend.open()
    path = str(connections["default"].settings_dict["NAME"])
    taken = threading.Event()
    holder = threading.Thread(target=hold_the_write_lock, args=(path, HOLD, taken))
    holder.start()
    assert taken.wait(10)
    stalls: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            stalls.append(now - last - 0.01)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        record, created = await backend.create(new("locked-1"), ConflictPolicy.FAIL)
    finally:
        ticker.cancel()
        holder.join()
        await backend.close()

    assert created
    assert record.instance_id == "locked-1"
    assert time.monotonic() - started >= HOLD - 0.2  # it did wait for the lock
    assert max(stalls) < 0.1, f"the event loop stalled {max(stalls):.3f}s"
