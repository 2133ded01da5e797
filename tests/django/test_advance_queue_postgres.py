"""``DjangoBackend``'s ``commit_and_publish`` on PostgreSQL: the commit's one statement.

What the two ``AdvanceQueue`` writes do is the contract's (``sayiir_core.testing``, run
on ``DjangoBackend`` too); here: the commit that queues a dispatched advance's steps is
still one round trip, and the queued steps wake idle workers, in this process and in
others (``NOTIFY``), even when the commit itself makes nothing runnable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from sayiir_django_testproject.support import require_postgres

from sayiir_core.backends.base import ConflictPolicy, NewInstance, StepWrite
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.status import Status
from sayiir_django import _advance as advance
from sayiir_django import _operations as ops
from sayiir_django._transactions import Database
from sayiir_django._wakeups import WORK_CHANNEL, notifiers_for
from sayiir_django.models import SharedStep

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(
        transaction=True, databases=["postgres"], available_apps=["sayiir_django"]
    ),
]

ALIAS = "postgres"
DB = Database(ALIAS, 5.0)
WANTED = {"wf": "h1"}


def claimed(instance_id: str) -> int:
    now = time.time()
    new = NewInstance(instance_id, "wf", "h1", b"0", Status.PENDING, now)
    ops.create(DB, new, ConflictPolicy.FAIL)
    claim = advance.claim_if_free(DB, instance_id, "worker-1", WANTED, now, now + 30)
    assert claim is not None
    return claim.token


def ticket(instance_id: str, key: str) -> StepTicket:
    return StepTicket(StepRef(instance_id, key, 1), "wf", "h1", b"1", 3, time.time())


def round_trips(body: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connections[ALIAS]) as queries:
        body()
    return [query["sql"] for query in queries.captured_queries]


def queued() -> list[tuple[str, int]]:
    rows = SharedStep.objects.using(ALIAS).order_by("step_key")
    return list(rows.values_list("step_key", "attempt"))


@pytest.fixture
def watch_work() -> Iterator[list[None]]:
    """One entry each time this process's idle workers are woken."""
    work = notifiers_for(ALIAS).work
    woken: list[None] = []
    original = work.notify

    def record() -> None:
        woken.append(None)
        original()

    work.notify = record  # type: ignore[method-assign]
    yield woken
    del work.notify


def test_commit_and_publish_is_one_round_trip() -> None:
    token = claimed("one")
    write = StepWrite(Status.WAITING, {}, time.time(), checkpoints=[("a", b"2")], release=True)
    tickets = [ticket("one", "b"), ticket("one", "c")]
    # The same shape once on another instance prepares its statement on this connection,
    # as a worker's first step does.
    warm_up = claimed("warm-up")
    advance.commit_and_publish(DB, "warm-up", warm_up, write, [ticket("warm-up", "b")], 1)
    SharedStep.objects.using(ALIAS).filter(instance__instance_id="warm-up").delete()

    sent = round_trips(lambda: advance.commit_and_publish(DB, "one", token, write, tickets, 1))

    assert len(sent) == 1, sent
    assert queued() == [("b", 1), ("c", 1)]
    # The instance is flagged as having queue rows, so a checkpoint of "b" removes its row.
    again = advance.claim_if_free(DB, "one", "worker-2", WANTED, time.time(), time.time() + 30)
    assert again is not None
    checkpoint_b = StepWrite(Status.RUNNING, {}, time.time(), checkpoints=[("b", b"3")])
    ops.commit(DB, "one", again.token, checkpoint_b, 2)
    assert queued() == [("c", 1)]


def test_the_queued_steps_wake_idle_workers_everywhere(watch_work: list[None]) -> None:
    token = claimed("woken")
    params = connections[ALIAS].get_connection_params()
    with psycopg.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        dbname=params["dbname"],
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {WORK_CHANNEL}")
        del watch_work[:]
        # The holder keeps its claim: nothing but the tickets is new work.
        write = StepWrite(Status.RUNNING, {}, time.time(), checkpoints=[("a", b"2")])

        advance.commit_and_publish(DB, "woken", token, write, [ticket("woken", "b")], 3)

        told = list(listener.notifies(timeout=10.0, stop_after=1))
    assert [n.channel for n in told] == [WORK_CHANNEL]
    assert watch_work == [None]


def test_tickets_of_another_instance_go_in_one_transaction() -> None:
    """Not the one statement's case (it queues the committing instance's steps only)."""
    token = claimed("parent")
    claimed("child")
    write = StepWrite(Status.WAITING, {}, time.time(), release=True)

    advance.commit_and_publish(DB, "parent", token, write, [ticket("child", "x")], 4)

    rows = SharedStep.objects.using(ALIAS).values_list("instance__instance_id", "step_key")
    assert list(rows) == [("child", "x")]
