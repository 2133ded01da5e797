"""On SQLite, one process's write transactions take turns before they reach SQLite's lock.

SQLite has one write lock, and a thread waiting for it in SQLite's busy handler sleeps
in coarse steps, which cost a worker's threads most of their throughput. The test turns
the busy handler off and allows no retry (a "database is locked" would surface at once):
eight threads writing at the same time all succeed only because they queue in-process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from sayiir_core.backends.base import ConflictPolicy, HistoryEvent, NewInstance, StepWrite
from sayiir_core.status import Status
from sayiir_django import _operations as ops
from sayiir_django._transactions import Database
from sayiir_django.models import Checkpoint

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]


@pytest.fixture
def no_busy_wait() -> Iterator[None]:
    """New connections on ``default`` fail at once when the write lock is taken."""

    def turn_off(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.alias == "default":
            connection.connection.execute("PRAGMA busy_timeout = 0")

    connection_created.connect(turn_off)
    yield
    connection_created.disconnect(turn_off)


def test_threads_of_one_process_never_meet_at_the_write_lock(no_busy_wait: None) -> None:
    db = Database("default", lock_timeout=0.0)  # no retry of "database is locked"

    def run(n: int) -> None:
        try:
            now = time.time()
            instance_id = f"w-{n}"
            new = NewInstance(instance_id, "wf", "h1", b"0", Status.PENDING, now)
            ops.create(db, new, ConflictPolicy.FAIL)
            token = ops.claim(db, instance_id, f"worker-{n}", now + 30).token
            for key in ("a", "b", "c"):
                event = HistoryEvent("task_completed", now, step_key=key, attempt=1)
                write = StepWrite(
                    Status.RUNNING, {}, now, checkpoints=[(key, b"1")], events=[event]
                )
                ops.commit(db, instance_id, token, write, n)
        finally:
            connections.close_all()  # this thread's connection

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(40)))

    assert Checkpoint.objects.count() == 120
