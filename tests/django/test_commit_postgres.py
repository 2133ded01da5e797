"""The hot paths on PostgreSQL: a step's commit and a new instance, one round trip each.

``CaptureQueriesContext`` records every statement the connection sends, BEGIN and
COMMIT included (Django logs transaction statements), so its count is the round trips.
Through the ORM a commit took six and a create six; one statement takes one. The commit
stays fenced and exactly once, and a reply lost with the connection is resolved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connections
from django.test.utils import CaptureQueriesContext
from sayiir_django_testproject.support import require_postgres

from sayiir_core.backends.base import (
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    NewInstance,
    StepWrite,
)
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LeaseLostError,
)
from sayiir_core.status import Status
from sayiir_django import _control as control
from sayiir_django import _operations as ops
from sayiir_django import _step_queue as steps
from sayiir_django._transactions import Database
from sayiir_django._wakeups import notifiers_for
from sayiir_django.models import (
    Checkpoint,
    HistoryEntry,
    PendingSignal,
    SharedStep,
    WorkflowInstance,
)

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(
        transaction=True, databases=["postgres"], available_apps=["sayiir_django"]
    ),
]

ALIAS = "postgres"
DB = Database(ALIAS, 5.0)


def claimed(instance_id: str) -> int:
    """A new pending instance, claimed; returns the claim token."""
    now = time.time()
    new = NewInstance(instance_id, "wf", "h1", b"0", Status.PENDING, now)
    ops.create(DB, new, ConflictPolicy.FAIL)
    return ops.claim(DB, instance_id, "worker-1", now + 30).token


def step(key: str, **changes: Any) -> StepWrite:
    now = time.time()
    events = [
        HistoryEvent("task_started", now, step_key=key, attempt=1, worker_id="worker-1"),
        HistoryEvent("task_completed", now, step_key=key, attempt=1, detail={"ok": True}),
    ]
    fields: dict[str, Any] = {"checkpoints": [(key, b'"out"')], "events": events}
    fields.update(changes)
    return StepWrite(fields.pop("status", Status.RUNNING), {"done": [key]}, now, **fields)


def round_trips(body: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connections[ALIAS]) as queries:
        body()
    return [query["sql"] for query in queries.captured_queries]


@pytest.fixture
def watch_finishes() -> Iterator[list[str]]:
    """The instance ids this process's finish notifier is told about."""
    finish = notifiers_for(ALIAS).finish
    told: list[str] = []
    original = finish.notify

    def record(instance_id: str) -> None:
        told.append(instance_id)
        original(instance_id)

    finish.notify = record  # type: ignore[method-assign]
    yield told
    del finish.notify


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


def commit_on_another_instance(write: StepWrite) -> None:
    """Commit ``write``'s shape once on a fresh instance: its statement is then prepared
    on this connection, as it is after a worker's first step."""
    instance_id = f"warm-up-{time.monotonic_ns()}"
    ops.commit(DB, instance_id, claimed(instance_id), write, 100)


def test_a_step_commits_in_one_round_trip() -> None:
    token = claimed("one")
    commit_on_another_instance(step("a"))

    sent = round_trips(lambda: ops.commit(DB, "one", token, step("a"), 1))

    assert len(sent) == 1, sent
    assert sent[0].startswith("EXECUTE sayiir_"), sent
    assert list(
        Checkpoint.objects.using(ALIAS)
        .filter(instance__instance_id="one")
        .values_list("step_key", "payload")
    ) == [("a", b'"out"')]
    history = HistoryEntry.objects.using(ALIAS).filter(instance_id="one").order_by("seq")
    assert [(h.seq, h.kind, h.step_key, h.detail) for h in history] == [
        (1, "started", None, None),
        (2, "task_started", "a", None),
        (3, "task_completed", "a", '{"ok":true}'),
    ]
    record = ops.get_record(DB, "one")
    assert record is not None
    assert (record.status, record.control, record.owner) == (
        Status.RUNNING,
        {"done": ["a"]},
        "worker-1",
    )
    row = (
        ops.instances(DB)
        .filter(instance_id="one")
        .values("history_seq", "current_step", "attempt", "last_commit")
        .get()
    )
    assert row == {"history_seq": 3, "current_step": "a", "attempt": 1, "last_commit": 1}


def test_the_last_step_with_shared_steps_and_a_signal_is_still_one_round_trip(
    watch_finishes: list[str],
) -> None:
    token = claimed("last")
    now = time.time()
    steps.publish(DB, [StepTicket(StepRef("last", "branch", 1), "wf", "h1", b"1", 3, now)])
    control.send_signal(DB, "last", "go", b'"yes"', now)
    signal = control.next_signal(DB, "last", "go")
    assert signal is not None
    write = step(
        "branch",
        status=Status.COMPLETED,
        output=b'"done"',
        release=True,
        consumed_signal=signal.signal_id,
    )
    commit_on_another_instance(write)

    sent = round_trips(lambda: ops.commit(DB, "last", token, write, 2))

    assert len(sent) == 1, sent
    record = ops.get_record(DB, "last")
    assert record is not None
    assert (record.status, record.output, record.owner, record.lease_until) == (
        Status.COMPLETED,
        b'"done"',
        None,
        None,
    )
    assert not SharedStep.objects.using(ALIAS).exists()
    assert not PendingSignal.objects.using(ALIAS).exists()
    assert watch_finishes[-1:] == ["last"]


@pytest.mark.parametrize(
    ("pending", "stored"),
    [(ControlRequest.PAUSE, Status.PAUSED), (None, Status.PENDING)],
)
def test_a_pause_settles_only_if_still_asked_for(
    pending: ControlRequest | None, stored: Status
) -> None:
    token = claimed("pausing")
    if pending is not None:
        control.request_control(DB, "pausing", pending, "later", "ops", time.time())

    result = ops.commit(DB, "pausing", token, step("a", status=Status.PAUSED, release=True), 3)

    record = ops.get_record(DB, "pausing")
    assert record is not None
    assert result is None
    assert (record.status, record.control_request, record.owner) == (stored, None, None)


def test_a_stale_token_is_refused_and_writes_nothing() -> None:
    token = claimed("fenced")
    ops.claim(DB, "fenced", "worker-2", time.time() + 30)  # taken over

    with pytest.raises(LeaseLostError, match="taken over"):
        ops.commit(DB, "fenced", token, step("a"), 4)

    assert not Checkpoint.objects.using(ALIAS).exists()
    assert HistoryEntry.objects.using(ALIAS).count() == 1
    with pytest.raises(InstanceNotFoundError):
        ops.commit(DB, "nobody", token, step("a"), 5)


def test_a_step_checkpointed_twice_is_refused_and_writes_nothing() -> None:
    token = claimed("twice")
    ops.commit(DB, "twice", token, step("a"), 6)

    with pytest.raises(LeaseLostError, match="'a' is already checkpointed"):
        ops.commit(DB, "twice", token, step("a"), 7)

    assert Checkpoint.objects.using(ALIAS).count() == 1
    assert HistoryEntry.objects.using(ALIAS).count() == 3
    assert ops.instances(DB).values_list("last_commit", flat=True).get() == 6


def terminate(connection_pid: int) -> None:
    params = connections[ALIAS].get_connection_params()
    with psycopg.connect(
        host=params["host"], port=params["port"], user=params["user"], dbname="postgres"
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [connection_pid])


def test_a_connection_killed_before_the_commit_is_replaced_and_the_step_written_once() -> None:
    token = claimed("killed")
    connection = connections[ALIAS]
    connection.ensure_connection()
    terminate(connection.connection.info.backend_pid)

    ops.commit(DB, "killed", token, step("a"), 8)

    assert Checkpoint.objects.using(ALIAS).count() == 1
    assert ops.instances(DB).values_list("last_commit", flat=True).get() == 8


def test_a_reply_lost_after_the_commit_applied_resolves_as_applied() -> None:
    token = claimed("lost")
    connection = connections[ALIAS]
    lost: list[str] = []

    def lose_the_reply(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("EXECUTE sayiir_") and not lost:
            # Applied (autocommit) - then the connection dies before we read the reply.
            lost.append(sql)
            terminate(connection.connection.info.backend_pid)
            raise OperationalError("server closed the connection unexpectedly")
        return result

    with connection.execute_wrapper(lose_the_reply):
        request = ops.commit(DB, "lost", token, step("a"), 9)

    assert lost
    assert request is None
    assert Checkpoint.objects.using(ALIAS).count() == 1
    assert HistoryEntry.objects.using(ALIAS).count() == 3


def test_a_new_instance_is_one_round_trip_and_numbers_after_any_left_over_history(
    watch_work: list[None],
) -> None:
    now = time.time()
    ops.create(
        DB, NewInstance("warm-up", "wf", "h1", b"0", Status.PENDING, now), ConflictPolicy.FAIL
    )
    first = NewInstance("fresh", "wf", "h1", b"0", Status.PENDING, now)

    sent = round_trips(lambda: ops.create(DB, first, ConflictPolicy.FAIL))

    assert len(sent) == 1, sent
    record = ops.get_record(DB, "fresh")
    assert record is not None
    assert record.status is Status.PENDING
    assert watch_work == [None, None]  # this process's idle workers were woken, each time
    # The history of an id outlives its row: a new instance numbers on after it.
    WorkflowInstance.objects.using(ALIAS).filter(instance_id="fresh").delete()
    again = NewInstance("fresh", "wf", "h1", b"1", Status.PENDING, now + 1)
    ops.create(DB, again, ConflictPolicy.FAIL)
    seqs = HistoryEntry.objects.using(ALIAS).filter(instance_id="fresh").order_by("seq")
    assert list(seqs.values_list("seq", "kind")) == [(1, "started"), (2, "started")]
    assert WorkflowInstance.objects.using(ALIAS).get(instance_id="fresh").history_seq == 2


def test_an_existing_id_still_gets_its_conflict_policy() -> None:
    now = time.time()
    new = NewInstance("taken", "wf", "h1", b"0", Status.PENDING, now)
    ops.create(DB, new, ConflictPolicy.FAIL)
    later = NewInstance("taken", "wf", "h1", b"9", Status.PENDING, now + 1)

    with pytest.raises(InstanceAlreadyExistsError):
        ops.create(DB, later, ConflictPolicy.FAIL)
    existing, created = ops.create(DB, later, ConflictPolicy.USE_EXISTING)
    assert (existing.input, created) == (b"0", False)
    replaced, created = ops.create(DB, later, ConflictPolicy.TERMINATE_EXISTING)
    assert (replaced.input, created) == (b"9", True)
    kinds = HistoryEntry.objects.using(ALIAS).order_by("seq").values_list("kind", flat=True)
    assert list(kinds) == ["started", "cancelled", "started"]


# -- prepared statements (see sayiir_django/_prepared.py) ------------------------------


def statement_kinds(sent: list[str]) -> list[str]:
    return [sql.split(None, 1)[0] for sql in sent]


def test_a_connection_prepares_a_statement_once_and_again_after_the_session_lost_it() -> None:
    tokens = {name: claimed(name) for name in ("p1", "p2", "p3")}
    connections[ALIAS].close()  # a new session, with nothing prepared

    first = round_trips(lambda: ops.commit(DB, "p1", tokens["p1"], step("a"), 11))
    second = round_trips(lambda: ops.commit(DB, "p2", tokens["p2"], step("a"), 12))
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does too
    third = round_trips(lambda: ops.commit(DB, "p3", tokens["p3"], step("a"), 13))

    assert statement_kinds(first) == ["PREPARE", "EXECUTE"]
    assert statement_kinds(second) == ["EXECUTE"]
    # The EXECUTE of the forgotten statement ran nothing; prepared again, it ran once.
    assert statement_kinds(third) == ["EXECUTE", "PREPARE", "EXECUTE"]
    written = Checkpoint.objects.using(ALIAS).values_list("instance__instance_id", flat=True)
    assert sorted(written) == ["p1", "p2", "p3"]
    commits = ops.instances(DB).order_by("instance_id").values_list("last_commit", flat=True)
    assert list(commits) == [11, 12, 13]


def test_behind_a_transaction_pooler_the_statement_is_sent_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Django's setting for PgBouncer in transaction mode: the next statement may reach
    # a server connection that never saw a PREPARE.
    monkeypatch.setitem(connections[ALIAS].settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    token = claimed("pooled")

    sent = round_trips(lambda: ops.commit(DB, "pooled", token, step("a"), 14))

    assert len(sent) == 1, sent
    assert sent[0].lstrip().startswith("WITH upd AS"), sent
    assert Checkpoint.objects.using(ALIAS).filter(instance__instance_id="pooled").exists()
