"""The backend contract, part 2: commits, cancel and pause requests, signals."""

from __future__ import annotations

import pytest

from sayiir_core import (
    Backend,
    HistoryEvent,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseLostError,
    Status,
)
from sayiir_core.backends import ControlRequest, StepWrite
from sayiir_core.testing._support import (
    HASH,
    NOW,
    TTL,
    BackendFixtures,
    claimed,
    create,
    kinds,
    step,
)


class CommitsControlAndSignalsContract(BackendFixtures):
    """``commit`` and its fencing, ``request_control`` and ``unpause``, ``send_signal``
    and ``next_signal``."""

    # -- commit ------------------------------------------------------------------------

    async def test_commit_writes_checkpoints_events_signal_and_record_together(
        self,
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

    async def test_commit_with_a_stale_token_raises_and_writes_nothing(
        self, backend: Backend
    ) -> None:
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

    async def test_commit_without_a_claim_is_refused(self, backend: Backend) -> None:
        await create(backend)

        with pytest.raises(LeaseLostError):
            await backend.commit("i-1", 0, step())

    async def test_commit_after_release_is_refused(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 5, release=True))

        record = await backend.get_record("i-1")
        assert record is not None
        assert (record.owner, record.lease_until) == (None, None)
        with pytest.raises(LeaseLostError):
            await backend.commit("i-1", token, step())

    async def test_commit_to_an_unknown_instance_raises(self, backend: Backend) -> None:
        with pytest.raises(InstanceNotFoundError):
            await backend.commit("nope", 1, step())

    async def test_a_checkpoint_cannot_be_written_twice(self, backend: Backend) -> None:
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

    async def test_commit_returns_a_pending_control_request(self, backend: Backend) -> None:
        token = await claimed(backend)
        record = await backend.request_control(
            "i-1", ControlRequest.PAUSE, "deploy", "ops", NOW + 1
        )
        assert (record.status, record.control_request) == (Status.PENDING, ControlRequest.PAUSE)

        assert await backend.commit("i-1", token, step()) is ControlRequest.PAUSE
        assert await backend.commit("i-1", token, step(Status.PAUSED, release=True)) is None

        paused = await backend.get_record("i-1")
        assert paused is not None
        assert (paused.status, paused.control_request, paused.owner) == (Status.PAUSED, None, None)
        assert (paused.reason, paused.paused_by) == ("deploy", "ops")

    async def test_a_terminal_commit_releases_the_claim(self, backend: Backend) -> None:
        token = await claimed(backend)

        await backend.commit("i-1", token, step(Status.COMPLETED, output=b"42"))

        record = await backend.get_record("i-1")
        assert record is not None
        assert (record.status, record.output, record.owner) == (Status.COMPLETED, b"42", None)

    # -- request_control and unpause ---------------------------------------------------

    @pytest.mark.parametrize(
        ("request_kind", "status", "kind", "by_field"),
        [
            (ControlRequest.CANCEL, Status.CANCELLED, "cancelled", "cancelled_by"),
            (ControlRequest.PAUSE, Status.PAUSED, "paused", "paused_by"),
        ],
    )
    async def test_control_applies_at_once_without_a_live_claim(
        self,
        backend: Backend,
        request_kind: ControlRequest,
        status: Status,
        kind: str,
        by_field: str,
    ) -> None:
        await claimed(backend)  # the lease ends at NOW + TTL

        record = await backend.request_control("i-1", request_kind, "why", "ops", NOW + TTL + 1)

        assert (record.status, record.reason, getattr(record, by_field)) == (status, "why", "ops")
        assert (record.owner, record.control_request, record.updated_at) == (
            None,
            None,
            NOW + TTL + 1,
        )
        assert await backend.get_record("i-1") == record
        history = await backend.history("i-1")
        assert (history[-1].kind, history[-1].detail) == (kind, {"reason": "why", "by": "ops"})

    async def test_control_waits_for_the_next_commit_under_a_live_claim(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)

        record = await backend.request_control("i-1", ControlRequest.CANCEL, "why", "ops", NOW + 1)

        assert (record.status, record.control_request) == (Status.PENDING, ControlRequest.CANCEL)
        assert record.cancelled_by == "ops"
        assert await backend.get_record("i-1") == record
        assert await kinds(backend) == ["started"]
        assert await backend.commit("i-1", token, step()) is ControlRequest.CANCEL

    async def test_control_on_a_finished_instance_raises(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(Status.COMPLETED))

        for request in ControlRequest:
            with pytest.raises(InvalidStateError, match="completed"):
                await backend.request_control("i-1", request, None, None, NOW + 5)
        with pytest.raises(InstanceNotFoundError):
            await backend.request_control("nope", ControlRequest.CANCEL, None, None, NOW)

    async def test_pausing_a_paused_instance_changes_nothing(self, backend: Backend) -> None:
        await create(backend)
        paused = await backend.request_control("i-1", ControlRequest.PAUSE, "a", "x", NOW + 1)

        again = await backend.request_control("i-1", ControlRequest.PAUSE, "b", "y", NOW + 2)

        assert again == paused
        assert await kinds(backend) == ["started", "paused"]

    async def test_unpause_makes_the_instance_runnable_again(self, backend: Backend) -> None:
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

    async def test_unpause_withdraws_a_pending_pause_request(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.request_control("i-1", ControlRequest.PAUSE, "a", "x", NOW + 1)

        record = await backend.unpause("i-1", NOW + 2)

        assert (record.control_request, record.paused_by) == (None, None)
        assert await backend.commit("i-1", token, step()) is None

    async def test_unpause_of_a_running_instance_raises(self, backend: Backend) -> None:
        await create(backend)

        with pytest.raises(InvalidStateError, match="not paused"):
            await backend.unpause("i-1", NOW)
        with pytest.raises(InstanceNotFoundError):
            await backend.unpause("nope", NOW)

    # -- signals -----------------------------------------------------------------------

    async def test_signals_are_fifo_per_name(self, backend: Backend) -> None:
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

    async def test_consuming_a_signal_removes_exactly_that_one(self, backend: Backend) -> None:
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

    async def test_signal_to_a_finished_or_unknown_instance_raises(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(Status.CANCELLED))

        with pytest.raises(InvalidStateError, match="cancelled"):
            await backend.send_signal("i-1", "go", b"", NOW + 5)
        with pytest.raises(InstanceNotFoundError):
            await backend.send_signal("nope", "go", b"", NOW + 5)
        assert await backend.next_signal("i-1", "go") is None

    async def test_signal_wakes_an_instance_awaiting_signals(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, awaiting_approval())
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

    async def test_a_signal_it_does_not_wait_for_is_buffered_without_waking_it(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, awaiting_approval())

        await backend.send_signal("i-1", "shipped", b"later", NOW + 6)

        record = await backend.get_record("i-1")
        assert record is not None
        assert record.wake_at is None
        assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 7, 10) == []
        buffered = await backend.next_signal("i-1", "shipped")
        assert buffered is not None
        assert buffered.payload == b"later"

    async def test_signal_does_not_cut_a_durable_delay_short(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 100, release=True))

        await backend.send_signal("i-1", "early", b"", NOW + 5)

        record = await backend.get_record("i-1")
        assert record is not None
        assert record.wake_at == NOW + 100


def awaiting_approval() -> StepWrite:
    """A released write parking the instance on ``wait_for_signal("approve")``."""
    return step(
        Status.AWAITING_SIGNAL,
        wake_at=None,
        release=True,
        control={"signals": {"approval": "approve"}},
    )
