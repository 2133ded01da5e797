"""The behaviour every ``Backend`` must have, run against each one (see conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest

from sayiir_core.backends import (
    Backend,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    NewInstance,
    StepWrite,
)
from sayiir_core.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseLostError,
)
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status

NOW = 1_000.0
HASH = "hash-1"
TTL = 30.0


def new(
    instance_id: str = "i-1",
    *,
    workflow_id: str = "wf",
    now: float = NOW,
    input: bytes = b'{"n": 1}',
    owner: str | None = None,
    priority: int = 3,
) -> NewInstance:
    return NewInstance(
        instance_id=instance_id,
        workflow_id=workflow_id,
        definition_hash=HASH,
        input=input,
        status=Status.PENDING,
        now=now,
        owner=owner,
        lease_until=now + TTL if owner is not None else None,
        priority=priority,
    )


def step(
    status: Status = Status.RUNNING,
    *,
    now: float = NOW + 1,
    checkpoints: Sequence[tuple[str, bytes]] = (),
    events: Sequence[HistoryEvent] = (),
    control: dict[str, Any] | None = None,
    **extra: Any,
) -> StepWrite:
    return StepWrite(
        status=status,
        control=control or {},
        now=now,
        checkpoints=checkpoints,
        events=events,
        **extra,
    )


async def create(backend: Backend, instance_id: str = "i-1", **kwargs: Any) -> None:
    _, created = await backend.create(new(instance_id, **kwargs), ConflictPolicy.FAIL)
    assert created


async def claimed(backend: Backend, instance_id: str = "i-1", owner: str = "w1") -> int:
    """Create ``instance_id`` and claim it; returns the claim token."""
    await create(backend, instance_id)
    return (await backend.claim(instance_id, owner, TTL, NOW)).token


async def kinds(backend: Backend, instance_id: str = "i-1") -> list[str]:
    return [event.kind for event in await backend.history(instance_id)]


# -- create and conflict policies ---------------------------------------------------


async def test_create_stores_the_record_and_a_started_event(backend: Backend) -> None:
    record, created = await backend.create(new(priority=2), ConflictPolicy.FAIL)

    assert created
    assert (record.instance_id, record.workflow_id, record.definition_hash) == (
        "i-1",
        "wf",
        "hash-1",
    )
    assert (record.status, record.input, record.priority) == (Status.PENDING, b'{"n": 1}', 2)
    assert (record.created_at, record.updated_at, record.wake_at) == (NOW, NOW, NOW)
    assert (record.owner, record.claim_token, record.lease_until) == (None, 0, None)
    assert await backend.get_record("i-1") == record
    history = await backend.history("i-1")
    assert [(e.kind, e.at, e.seq) for e in history] == [("started", NOW, 1)]


async def test_create_with_an_owner_holds_the_first_claim(backend: Backend) -> None:
    record, _ = await backend.create(new(owner="runner"), ConflictPolicy.FAIL)

    assert (record.owner, record.claim_token, record.lease_until) == ("runner", 1, NOW + TTL)
    assert await backend.commit("i-1", 1, step(checkpoints=[("a", b"1")])) is None
    assert await backend.get_checkpoint("i-1", "a") == b"1"


async def test_conflict_fail_raises_and_keeps_the_original(backend: Backend) -> None:
    await create(backend)

    with pytest.raises(InstanceAlreadyExistsError, match="i-1"):
        await backend.create(new(input=b"other"), ConflictPolicy.FAIL)

    record = await backend.get_record("i-1")
    assert record is not None
    assert record.input == b'{"n": 1}'
    assert await kinds(backend) == ["started"]


async def test_conflict_use_existing_returns_the_existing_record(backend: Backend) -> None:
    original, _ = await backend.create(new(), ConflictPolicy.FAIL)

    record, created = await backend.create(
        new(input=b"other", now=NOW + 5), ConflictPolicy.USE_EXISTING
    )

    assert not created
    assert record == original
    assert await kinds(backend) == ["started"]


async def test_conflict_terminate_existing_replaces_and_keeps_history(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.send_signal("i-1", "go", b"old", NOW)
    await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))

    record, created = await backend.create(
        new(input=b"fresh", now=NOW + 10), ConflictPolicy.TERMINATE_EXISTING
    )

    assert created
    assert (record.input, record.status, record.created_at) == (b"fresh", Status.PENDING, NOW + 10)
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert dict(loaded.checkpoints) == {}
    assert await backend.next_signal("i-1", "go") is None
    history = await backend.history("i-1")
    assert [(e.kind, e.seq) for e in history] == [
        ("started", 1),
        ("signal_sent", 2),
        ("cancelled", 3),
        ("started", 4),
    ]
    assert history[2].detail == {"reason": "replaced (terminate_existing)"}


async def test_terminate_existing_fences_out_the_old_claim(backend: Backend) -> None:
    old_token = await claimed(backend, owner="zombie")
    await backend.create(new(now=NOW + 10), ConflictPolicy.TERMINATE_EXISTING)
    new_claim = await backend.claim("i-1", "w2", TTL, NOW + 11)

    assert new_claim.token != old_token
    with pytest.raises(LeaseLostError):
        await backend.commit("i-1", old_token, step(checkpoints=[("a", b"zombie")]))
    assert await backend.get_checkpoint("i-1", "a") is None


async def test_replaced_instance_lists_as_the_newest(backend: Backend) -> None:
    await create(backend, "a")
    await create(backend, "b")
    await backend.create(new("a", now=NOW + 1), ConflictPolicy.TERMINATE_EXISTING)

    page = await backend.list_instances()

    assert [r.instance_id for r in page.items] == ["a", "b"]


# -- load, get_record, get_checkpoint -------------------------------------------------


async def test_reads_of_an_unknown_instance_return_none(backend: Backend) -> None:
    assert await backend.load("nope") is None
    assert await backend.get_record("nope") is None
    assert await backend.get_checkpoint("nope", "a") is None


async def test_load_returns_checkpoints_in_write_order(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(checkpoints=[("zeta", b"1"), ("alpha", b"2")]))
    await backend.commit("i-1", token, step(checkpoints=[("mid", b"3")]))

    loaded = await backend.load("i-1")

    assert loaded is not None
    assert list(loaded.checkpoints.items()) == [("zeta", b"1"), ("alpha", b"2"), ("mid", b"3")]
    assert loaded.record.status is Status.RUNNING
    assert await backend.get_checkpoint("i-1", "alpha") == b"2"
    assert await backend.get_checkpoint("i-1", "missing") is None


async def test_records_round_trip_every_field(backend: Backend) -> None:
    token = await claimed(backend)
    error = ErrorInfo("ValueError", "card declined", task_id="charge", kind="task")
    control = {
        "attempts": {"charge": 2},
        "retry_at": MappingProxyType({"charge": NOW + 9.5}),
        "timers": {},
    }

    await backend.commit(
        "i-1",
        token,
        step(Status.FAILED, control=control, output=b"\x00\xff", error=error, wake_at=None),
    )

    record = await backend.get_record("i-1")
    assert record is not None
    assert record.error == error
    assert record.output == b"\x00\xff"
    assert dict(record.control) == {**control, "retry_at": {"charge": NOW + 9.5}}
    assert (record.status, record.updated_at, record.wake_at) == (Status.FAILED, NOW + 1, None)
    assert (record.owner, record.lease_until) == (None, None)


# -- claim, claim_next, renew ---------------------------------------------------------


async def test_claim_bumps_the_token_and_takes_over_a_live_lease(backend: Backend) -> None:
    first = await claimed(backend, owner="w1")
    second = await backend.claim("i-1", "w2", TTL, NOW + 1)

    assert second.token == first + 1
    assert second.instance.record.owner == "w2"
    assert second.instance.record.lease_until == NOW + 1 + TTL
    assert second.instance.record.claim_token == second.token


async def test_claim_returns_the_checkpoints(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))

    claim = await backend.claim("i-1", "w2", TTL, NOW + 2)

    assert dict(claim.instance.checkpoints) == {"a": b"1"}


async def test_claim_of_an_unknown_instance_raises(backend: Backend) -> None:
    with pytest.raises(InstanceNotFoundError):
        await backend.claim("nope", "w1", TTL, NOW)


async def test_claim_next_takes_a_pending_instance_once_per_lease(backend: Backend) -> None:
    await create(backend)

    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW, 10)

    assert [c.instance.record.instance_id for c in claims] == ["i-1"]
    assert claims[0].token == 1
    assert claims[0].instance.record.owner == "w1"
    assert await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + 1, 10) == []
    # Once the lease runs out, another worker takes over with a newer token.
    later = await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + TTL + 1, 10)
    assert [(c.token, c.instance.record.owner) for c in later] == [(2, "w2")]


async def test_claim_next_orders_by_priority_then_wake_at(backend: Backend) -> None:
    await create(backend, "low", priority=5)
    await create(backend, "high", priority=1, now=NOW + 2)
    await create(backend, "mid-late", priority=3, now=NOW + 3)
    await create(backend, "mid-early", priority=3, now=NOW + 1)

    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 10)

    assert [c.instance.record.instance_id for c in claims] == [
        "high",
        "mid-early",
        "mid-late",
        "low",
    ]


async def test_claim_next_respects_limit_and_workflow_ids(backend: Backend) -> None:
    for n in range(3):
        await create(backend, f"a-{n}", workflow_id="a", now=NOW + n)
    await create(backend, "b-0", workflow_id="b")

    first = await backend.claim_next("w1", {"a": HASH}, TTL, NOW + 10, 2)
    rest = await backend.claim_next("w1", {"a": HASH, "c": HASH}, TTL, NOW + 10, 5)

    assert [c.instance.record.instance_id for c in first] == ["a-0", "a-1"]
    assert [c.instance.record.instance_id for c in rest] == ["a-2"]
    assert await backend.claim_next("w1", {}, TTL, NOW + 10, 5) == []
    assert await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, 0) == []
    assert await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, -1) == []
    assert [
        c.instance.record.instance_id
        for c in await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, 5)
    ] == ["b-0"]


async def test_claim_next_leaves_instances_of_other_definitions(backend: Backend) -> None:
    await create(backend, "old-1")

    assert await backend.claim_next("w1", {"wf": "hash-2"}, TTL, NOW + 10, 5) == []
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 5)
    assert [c.instance.record.instance_id for c in claims] == ["old-1"]


@pytest.mark.parametrize("status", [Status.WAITING, Status.AWAITING_SIGNAL])
async def test_claim_next_takes_a_parked_instance_at_wake_at(
    backend: Backend, status: Status
) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(status, wake_at=NOW + 100, release=True))

    assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 99, 10) == []
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 100, 10)
    assert [c.instance.record.status for c in claims] == [status]


async def test_claim_next_skips_parked_instances_without_wake_at(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.AWAITING_SIGNAL, wake_at=None, release=True))

    assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10_000, 10) == []


@pytest.mark.parametrize("status", [Status.PAUSED, Status.COMPLETED, Status.FAILED])
async def test_claim_next_skips_paused_and_finished_instances(
    backend: Backend, status: Status
) -> None:
    token = await claimed(backend)
    if status is Status.PAUSED:
        await backend.request_control("i-1", ControlRequest.PAUSE, None, None, NOW + 1)
    await backend.commit("i-1", token, step(status, release=True))

    assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10_000, 10) == []


async def test_a_pause_settles_only_while_it_is_still_asked_for(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.request_control("i-1", ControlRequest.PAUSE, "hold", "ops", NOW + 1)
    await backend.unpause("i-1", NOW + 2)  # withdrawn while the steps were still running

    await backend.commit("i-1", token, step(Status.PAUSED, release=True))

    record = await backend.get_record("i-1")
    assert record is not None
    assert record.status is Status.PENDING
    assert record.control_request is None
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 10)
    assert [c.instance.record.instance_id for c in claims] == ["i-1"]


async def test_claim_next_skips_a_cancelled_instance(backend: Backend) -> None:
    await create(backend)
    await backend.request_control("i-1", ControlRequest.CANCEL, None, None, NOW)

    assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 1, 10) == []


async def test_a_control_request_makes_a_parked_instance_claimable(backend: Backend) -> None:
    token = await claimed(backend)
    # Parked far in the future but still holding the lease, then a cancel arrives.
    await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 10_000))
    await backend.request_control("i-1", ControlRequest.CANCEL, "stop", "ops", NOW + 2)

    claims = await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + TTL + 1, 10)

    assert [c.instance.record.control_request for c in claims] == [ControlRequest.CANCEL]


async def test_renew_extends_only_the_current_claim(backend: Backend) -> None:
    token = await claimed(backend)

    assert await backend.renew("i-1", token, TTL, NOW + 20)
    record = await backend.get_record("i-1")
    assert record is not None
    assert record.lease_until == NOW + 20 + TTL
    assert not await backend.renew("i-1", token - 1, TTL, NOW + 21)
    assert not await backend.renew("nope", token, TTL, NOW + 21)
    await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 50, release=True))
    assert not await backend.renew("i-1", token, TTL, NOW + 22)


# -- commit ---------------------------------------------------------------------------


async def test_commit_writes_checkpoints_events_signal_and_record_together(
    backend: Backend,
) -> None:
    token = await claimed(backend)
    await backend.send_signal("i-1", "approve", b"yes", NOW)
    signal = await backend.next_signal("i-1", "approve")
    assert signal is not None
    event = HistoryEvent(
        "signal_received", NOW + 1, "approve", worker_id="w1", detail={"name": "approve"}
    )

    request = await backend.commit(
        "i-1",
        token,
        step(
            checkpoints=[("approve", signal.payload)],
            events=[event],
            consumed_signal=signal.signal_id,
            control={"attempts": {}},
        ),
    )

    assert request is None
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert dict(loaded.checkpoints) == {"approve": b"yes"}
    assert loaded.record.status is Status.RUNNING
    assert loaded.record.owner == "w1"
    assert await backend.next_signal("i-1", "approve") is None
    history = await backend.history("i-1")
    assert history[-1] == HistoryEvent(
        "signal_received",
        NOW + 1,
        "approve",
        worker_id="w1",
        detail={"name": "approve"},
        seq=3,
    )


async def test_commit_with_a_stale_token_raises_and_writes_nothing(backend: Backend) -> None:
    stale = await claimed(backend, owner="w1")
    await backend.claim("i-1", "w2", TTL, NOW + 1)
    await backend.send_signal("i-1", "go", b"1", NOW + 1)
    signal = await backend.next_signal("i-1", "go")
    assert signal is not None
    before = await backend.get_record("i-1")
    history_before = await backend.history("i-1")

    with pytest.raises(LeaseLostError, match="i-1"):
        await backend.commit(
            "i-1",
            stale,
            step(
                Status.COMPLETED,
                checkpoints=[("a", b"late")],
                output=b"late",
                events=[HistoryEvent("completed", NOW + 2)],
                consumed_signal=signal.signal_id,
            ),
        )

    assert await backend.get_record("i-1") == before
    assert await backend.get_checkpoint("i-1", "a") is None
    assert await backend.history("i-1") == history_before
    assert await backend.next_signal("i-1", "go") == signal


async def test_commit_without_a_claim_is_refused(backend: Backend) -> None:
    await create(backend)

    with pytest.raises(LeaseLostError):
        await backend.commit("i-1", 0, step())


async def test_commit_after_release_is_refused(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 5, release=True))

    record = await backend.get_record("i-1")
    assert record is not None
    assert (record.owner, record.lease_until) == (None, None)
    with pytest.raises(LeaseLostError):
        await backend.commit("i-1", token, step())


async def test_commit_to_an_unknown_instance_raises(backend: Backend) -> None:
    with pytest.raises(InstanceNotFoundError):
        await backend.commit("nope", 1, step())


async def test_a_checkpoint_cannot_be_written_twice(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(checkpoints=[("a", b"first")]))
    before = await backend.get_record("i-1")
    history_before = await backend.history("i-1")

    with pytest.raises(LeaseLostError, match="'a'"):
        await backend.commit(
            "i-1",
            token,
            step(
                Status.COMPLETED,
                checkpoints=[("b", b"2"), ("a", b"second")],
                events=[HistoryEvent("completed", NOW + 3)],
            ),
        )

    # Nothing of the refused step is kept: not "b", not the record, not the event.
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert dict(loaded.checkpoints) == {"a": b"first"}
    assert loaded.record == before
    assert await backend.history("i-1") == history_before


async def test_commit_returns_a_pending_control_request(backend: Backend) -> None:
    token = await claimed(backend)
    record = await backend.request_control("i-1", ControlRequest.PAUSE, "deploy", "ops", NOW + 1)
    assert (record.status, record.control_request) == (Status.PENDING, ControlRequest.PAUSE)

    assert await backend.commit("i-1", token, step()) is ControlRequest.PAUSE
    assert await backend.commit("i-1", token, step(Status.PAUSED, release=True)) is None

    paused = await backend.get_record("i-1")
    assert paused is not None
    assert (paused.status, paused.control_request, paused.owner) == (Status.PAUSED, None, None)
    assert (paused.reason, paused.paused_by) == ("deploy", "ops")


async def test_a_terminal_commit_releases_the_claim(backend: Backend) -> None:
    token = await claimed(backend)

    await backend.commit("i-1", token, step(Status.COMPLETED, output=b"42"))

    record = await backend.get_record("i-1")
    assert record is not None
    assert (record.status, record.output, record.owner) == (Status.COMPLETED, b"42", None)


# -- request_control and unpause -----------------------------------------------------


@pytest.mark.parametrize(
    ("request_kind", "status", "kind", "by_field"),
    [
        (ControlRequest.CANCEL, Status.CANCELLED, "cancelled", "cancelled_by"),
        (ControlRequest.PAUSE, Status.PAUSED, "paused", "paused_by"),
    ],
)
async def test_control_applies_at_once_without_a_live_claim(
    backend: Backend, request_kind: ControlRequest, status: Status, kind: str, by_field: str
) -> None:
    await claimed(backend)  # the lease ends at NOW + TTL

    record = await backend.request_control("i-1", request_kind, "why", "ops", NOW + TTL + 1)

    assert (record.status, record.reason, getattr(record, by_field)) == (status, "why", "ops")
    assert (record.owner, record.control_request, record.updated_at) == (None, None, NOW + TTL + 1)
    assert await backend.get_record("i-1") == record
    history = await backend.history("i-1")
    assert (history[-1].kind, history[-1].detail) == (kind, {"reason": "why", "by": "ops"})


async def test_control_waits_for_the_next_commit_under_a_live_claim(backend: Backend) -> None:
    token = await claimed(backend)

    record = await backend.request_control("i-1", ControlRequest.CANCEL, "why", "ops", NOW + 1)

    assert (record.status, record.control_request) == (Status.PENDING, ControlRequest.CANCEL)
    assert record.cancelled_by == "ops"
    assert await backend.get_record("i-1") == record
    assert await kinds(backend) == ["started"]
    assert await backend.commit("i-1", token, step()) is ControlRequest.CANCEL


async def test_control_on_a_finished_instance_raises(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.COMPLETED))

    for request in ControlRequest:
        with pytest.raises(InvalidStateError, match="completed"):
            await backend.request_control("i-1", request, None, None, NOW + 5)
    with pytest.raises(InstanceNotFoundError):
        await backend.request_control("nope", ControlRequest.CANCEL, None, None, NOW)


async def test_pausing_a_paused_instance_changes_nothing(backend: Backend) -> None:
    await create(backend)
    paused = await backend.request_control("i-1", ControlRequest.PAUSE, "a", "x", NOW + 1)

    again = await backend.request_control("i-1", ControlRequest.PAUSE, "b", "y", NOW + 2)

    assert again == paused
    assert await kinds(backend) == ["started", "paused"]


async def test_unpause_makes_the_instance_runnable_again(backend: Backend) -> None:
    await create(backend)
    await backend.request_control("i-1", ControlRequest.PAUSE, "a", "x", NOW + 1)

    record = await backend.unpause("i-1", NOW + 2)

    assert (record.status, record.wake_at, record.paused_by, record.reason) == (
        Status.PENDING,
        NOW + 2,
        None,
        None,
    )
    assert await kinds(backend) == ["started", "paused", "unpaused"]
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 3, 10)
    assert [c.instance.record.instance_id for c in claims] == ["i-1"]


async def test_unpause_withdraws_a_pending_pause_request(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.request_control("i-1", ControlRequest.PAUSE, "a", "x", NOW + 1)

    record = await backend.unpause("i-1", NOW + 2)

    assert (record.control_request, record.paused_by) == (None, None)
    assert await backend.commit("i-1", token, step()) is None


async def test_unpause_of_a_running_instance_raises(backend: Backend) -> None:
    await create(backend)

    with pytest.raises(InvalidStateError, match="not paused"):
        await backend.unpause("i-1", NOW)
    with pytest.raises(InstanceNotFoundError):
        await backend.unpause("nope", NOW)


# -- signals --------------------------------------------------------------------------


async def test_signals_are_fifo_per_name(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.send_signal("i-1", "a", b"a1", NOW)
    await backend.send_signal("i-1", "b", b"b1", NOW)
    await backend.send_signal("i-1", "a", b"a2", NOW)

    first = await backend.next_signal("i-1", "a")
    assert first is not None
    assert (first.name, first.payload) == ("a", b"a1")
    assert await backend.next_signal("i-1", "a") == first  # peeking does not consume

    await backend.commit("i-1", token, step(consumed_signal=first.signal_id))

    second = await backend.next_signal("i-1", "a")
    other = await backend.next_signal("i-1", "b")
    assert second is not None
    assert second.payload == b"a2"
    assert other is not None
    assert other.payload == b"b1"
    assert await backend.next_signal("i-1", "c") is None
    assert await backend.next_signal("nope", "a") is None


async def test_consuming_a_signal_removes_exactly_that_one(backend: Backend) -> None:
    token = await claimed(backend)
    for _ in range(3):
        await backend.send_signal("i-1", "tick", b"same", NOW)
    first = await backend.next_signal("i-1", "tick")
    assert first is not None

    await backend.commit("i-1", token, step(consumed_signal=first.signal_id))

    remaining = []
    while (signal := await backend.next_signal("i-1", "tick")) is not None:
        remaining.append(signal.signal_id)
        await backend.commit("i-1", token, step(consumed_signal=signal.signal_id))
    assert len(remaining) == 2
    assert first.signal_id not in remaining
    assert remaining == sorted(remaining)


async def test_signal_to_a_finished_or_unknown_instance_raises(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.CANCELLED))

    with pytest.raises(InvalidStateError, match="cancelled"):
        await backend.send_signal("i-1", "go", b"", NOW + 5)
    with pytest.raises(InstanceNotFoundError):
        await backend.send_signal("nope", "go", b"", NOW + 5)
    assert await backend.next_signal("i-1", "go") is None


async def test_signal_wakes_an_instance_awaiting_signals(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.AWAITING_SIGNAL, wake_at=None, release=True))
    assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 5, 10) == []

    await backend.send_signal("i-1", "approve", b"yes", NOW + 6)

    record = await backend.get_record("i-1")
    assert record is not None
    assert record.wake_at == NOW + 6
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 7, 10)
    assert [c.instance.record.instance_id for c in claims] == ["i-1"]
    history = await backend.history("i-1")
    assert (history[-1].kind, history[-1].at, history[-1].detail) == (
        "signal_sent",
        NOW + 6,
        {"name": "approve"},
    )


async def test_signal_does_not_cut_a_durable_delay_short(backend: Backend) -> None:
    token = await claimed(backend)
    await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 100, release=True))

    await backend.send_signal("i-1", "early", b"", NOW + 5)

    record = await backend.get_record("i-1")
    assert record is not None
    assert record.wake_at == NOW + 100


# -- list_instances and history --------------------------------------------------------


async def test_list_instances_pages_newest_first_without_gaps(backend: Backend) -> None:
    ids = [f"i-{n}" for n in range(7)]
    for n, instance_id in enumerate(ids):
        await create(backend, instance_id, now=NOW + n)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await backend.list_instances(limit=3, cursor=cursor)
        seen.extend(r.instance_id for r in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        # A submission between pages must not shift later pages.
        await create(backend, f"late-{pages}", now=NOW + 100 + pages)

    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_instances_has_no_next_page_after_an_exact_fit(backend: Backend) -> None:
    for n in range(4):
        await create(backend, f"i-{n}")

    first = await backend.list_instances(limit=2)
    second = await backend.list_instances(limit=2, cursor=first.next_cursor)

    assert [r.instance_id for r in first.items] == ["i-3", "i-2"]
    assert [r.instance_id for r in second.items] == ["i-1", "i-0"]
    assert second.next_cursor is None


async def test_list_instances_filters_by_status_and_workflow(backend: Backend) -> None:
    await create(backend, "a-1", workflow_id="a")
    await create(backend, "b-1", workflow_id="b")
    await create(backend, "a-2", workflow_id="a")
    await backend.request_control("a-1", ControlRequest.CANCEL, None, None, NOW)

    def ids(page: Any) -> list[str]:
        return [r.instance_id for r in page.items]

    assert ids(await backend.list_instances(workflow_id="a")) == ["a-2", "a-1"]
    assert ids(await backend.list_instances(status=Status.PENDING)) == ["a-2", "b-1"]
    assert ids(await backend.list_instances(status=Status.CANCELLED, workflow_id="a")) == ["a-1"]
    assert ids(await backend.list_instances(status=Status.CANCELLED, workflow_id="b")) == []
    page = await backend.list_instances(workflow_id="a", limit=1)
    assert ids(page) == ["a-2"]
    rest = await backend.list_instances(workflow_id="a", limit=1, cursor=page.next_cursor)
    assert (ids(rest), rest.next_cursor) == (["a-1"], None)


async def test_list_instances_rejects_a_bad_cursor_or_limit(backend: Backend) -> None:
    await create(backend)

    with pytest.raises(ValueError, match="cursor"):
        await backend.list_instances(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        await backend.list_instances(limit=0)


async def test_history_keeps_commit_events_in_order(backend: Backend) -> None:
    token = await claimed(backend)
    events = [
        HistoryEvent("task_started", NOW + 1, "a", 1, "w1"),
        HistoryEvent("task_completed", NOW + 2, "a", 1, "w1", {"ms": 1.5}),
    ]
    await backend.commit("i-1", token, step(checkpoints=[("a", b"1")], events=events))
    await backend.commit(
        "i-1", token, step(Status.COMPLETED, events=[HistoryEvent("completed", NOW + 3)])
    )

    history = await backend.history("i-1")

    assert history == [
        HistoryEvent("started", NOW, seq=1),
        HistoryEvent("task_started", NOW + 1, "a", 1, "w1", seq=2),
        HistoryEvent("task_completed", NOW + 2, "a", 1, "w1", {"ms": 1.5}, seq=3),
        HistoryEvent("completed", NOW + 3, seq=4),
    ]
    with pytest.raises(InstanceNotFoundError):
        await backend.history("nope")


# -- reset_from (retry_from) -----------------------------------------------------------

_WRITTEN = ["fetch", "body#0", "body#1", "item[0]", "item[3]", "send"]


async def _with_checkpoints(backend: Backend, keys: Sequence[str]) -> int:
    token = await claimed(backend)
    for key in keys:
        await backend.commit("i-1", token, step(checkpoints=[(key, key.encode())]))
    return token


@pytest.mark.parametrize(
    ("task_id", "kept"),
    [
        ("fetch", []),
        ("body", ["fetch"]),
        ("item", ["fetch", "body#0", "body#1"]),
        ("send", ["fetch", "body#0", "body#1", "item[0]", "item[3]"]),
    ],
)
async def test_reset_from_drops_that_step_and_everything_after(
    backend: Backend, task_id: str, kept: list[str]
) -> None:
    token = await _with_checkpoints(backend, _WRITTEN)
    error = ErrorInfo("ValueError", "boom", task_id="later")
    await backend.commit(
        "i-1", token, step(Status.FAILED, error=error, control={"attempts": {"later": 3}})
    )

    record = await backend.reset_from("i-1", task_id, NOW + 50)

    assert (record.status, record.error, dict(record.control)) == (Status.PENDING, None, {})
    assert (record.owner, record.wake_at, record.updated_at) == (None, NOW + 50, NOW + 50)
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert list(loaded.checkpoints) == kept
    assert loaded.record == record
    last = (await backend.history("i-1"))[-1]
    assert (last.kind, last.step_key) == ("retried_from", task_id)
    assert last.detail == {"dropped": _WRITTEN[len(kept) :]}
    # The instance runs again, and new checkpoints follow the kept ones in order.
    claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 51, 1)
    assert len(claims) == 1
    await backend.commit("i-1", claims[0].token, step(checkpoints=[("again", b"")]))
    reloaded = await backend.load("i-1")
    assert reloaded is not None
    assert list(reloaded.checkpoints) == [*kept, "again"]


async def test_reset_from_a_failed_map_step_drops_its_finished_items(backend: Backend) -> None:
    token = await _with_checkpoints(backend, ["fetch", "item[0]", "item[2]"])
    error = ErrorInfo("ValueError", "boom", task_id="item[1]")
    await backend.commit("i-1", token, step(Status.FAILED, error=error))

    record = await backend.reset_from("i-1", "item", NOW + 50)

    assert (record.status, record.error) == (Status.PENDING, None)
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert list(loaded.checkpoints) == ["fetch"]


async def test_reset_from_a_failed_step_without_checkpoint(backend: Backend) -> None:
    token = await _with_checkpoints(backend, ["fetch", "reserve"])
    error = ErrorInfo("ValueError", "card declined", task_id="charge")
    await backend.commit("i-1", token, step(Status.FAILED, error=error))

    record = await backend.reset_from("i-1", "charge", NOW + 50)

    assert (record.status, record.error) == (Status.PENDING, None)
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert list(loaded.checkpoints) == ["fetch", "reserve"]


async def test_reset_from_refuses_unknown_steps_and_running_instances(backend: Backend) -> None:
    token = await _with_checkpoints(backend, ["fetch"])

    with pytest.raises(InvalidStateError, match="while it is running"):
        await backend.reset_from("i-1", "fetch", NOW + 1)
    await backend.commit("i-1", token, step(Status.COMPLETED))
    with pytest.raises(InvalidStateError, match="no checkpoint"):
        await backend.reset_from("i-1", "never", NOW + 2)
    with pytest.raises(InstanceNotFoundError):
        await backend.reset_from("nope", "fetch", NOW + 2)
    loaded = await backend.load("i-1")
    assert loaded is not None
    assert list(loaded.checkpoints) == ["fetch"]
    assert loaded.record.status is Status.COMPLETED
