"""A PostgreSQL commit sends its checkpoints and history events as JSON text plus one
bytea (not as arrays): several of each in one commit come back exactly as written."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sayiir_core.backends import ConflictPolicy, HistoryEvent, NewInstance, StepWrite
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.status import Status

pytestmark = pytest.mark.postgres

NOW = 1_000.0


@pytest.fixture
async def backend(postgres_schema: tuple[str, str]) -> AsyncIterator[PostgresBackend]:
    url, schema = postgres_schema
    opened = PostgresBackend(url, schema=schema)
    await opened.open()
    yield opened
    await opened.close()


async def _claimed(backend: PostgresBackend) -> int:
    new = NewInstance("i-1", "wf", "hash-1", b"{}", Status.PENDING, NOW)
    await backend.create(new, ConflictPolicy.FAIL)
    claim = await backend.claim("i-1", "w1", 30.0, NOW)
    return claim.token


async def test_several_checkpoints_and_events_in_one_commit_round_trip(
    backend: PostgresBackend,
) -> None:
    token = await _claimed(backend)
    checkpoints = [
        ("a", b'{"x":1}'),
        ("empty", b""),
        ("binary\u00e9", bytes(range(256)) * 3),
        ("last", b"\x00\xff"),
    ]
    events = [
        HistoryEvent("task_started", NOW + 0.1234567, "a", 1, "w1"),
        HistoryEvent("task_completed", NOW + 0.5, "a", 1, "w1", {"duration_ms": 1.25}),
        HistoryEvent("timer_fired", NOW + 0.75, "empty"),
        HistoryEvent("note", NOW + 1, detail={"nested": {"list": [1, "two", None]}, "nul": "\x00"}),
    ]
    write = StepWrite(Status.RUNNING, {"n": 1}, NOW + 1, checkpoints=checkpoints, events=events)
    await backend.commit("i-1", token, write)

    loaded = await backend.load("i-1")
    assert loaded is not None
    assert list(loaded.checkpoints.items()) == checkpoints
    history = await backend.history("i-1")
    written = [(e.kind, e.at, e.step_key, e.attempt, e.worker_id, e.detail) for e in events]
    assert [(e.kind, e.at, e.step_key, e.attempt, e.worker_id, e.detail) for e in history][
        -len(events) :
    ] == written
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


async def test_a_commit_with_no_checkpoints_and_no_events_changes_only_the_record(
    backend: PostgresBackend,
) -> None:
    token = await _claimed(backend)
    before = await backend.history("i-1")
    await backend.commit("i-1", token, StepWrite(Status.RUNNING, {"n": 2}, NOW + 1))

    loaded = await backend.load("i-1")
    assert loaded is not None
    assert (dict(loaded.checkpoints), dict(loaded.record.control)) == ({}, {"n": 2})
    assert await backend.history("i-1") == before
