"""A step's commit on SQLite: one IMMEDIATE transaction of a fixed number of statements.

On SQLite a round trip is a function call, so the commit stays an ORM transaction:
BEGIN IMMEDIATE, the fenced read of the row, the checkpoints, the history, the row's
update, COMMIT. The count is capped so it cannot grow unnoticed (PostgreSQL's one
statement is tested in ``test_commit_postgres``).
"""

from __future__ import annotations

import time

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from sayiir_core.backends.base import ConflictPolicy, HistoryEvent, NewInstance, StepWrite
from sayiir_core.status import Status
from sayiir_django import _operations as ops
from sayiir_django._transactions import Database

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]

DB = Database("default", 5.0)


def test_a_step_is_one_transaction_of_six_statements() -> None:
    now = time.time()
    ops.create(DB, NewInstance("one", "wf", "h1", b"0", Status.PENDING, now), ConflictPolicy.FAIL)
    token = ops.claim(DB, "one", "worker-1", now + 30).token
    events = [
        HistoryEvent("task_started", now, step_key="a", attempt=1),
        HistoryEvent("task_completed", now, step_key="a", attempt=1),
    ]
    write = StepWrite(Status.RUNNING, {}, now, checkpoints=[("a", b"1")], events=events)

    with CaptureQueriesContext(connections["default"]) as queries:
        ops.commit(DB, "one", token, write, 1)

    sent = [query["sql"] for query in queries.captured_queries]
    assert len(sent) == 6, sent
    assert sent[0] == "BEGIN IMMEDIATE"
    assert sent[-1] == "COMMIT"
