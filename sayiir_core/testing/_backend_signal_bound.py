"""The backend contract, part 4: the bound on buffered signals.

An instance buffers at most ``MAX_BUFFERED_SIGNALS`` unconsumed signals. The send
beyond it raises ``SignalBufferFullError`` and stores nothing: no signal, no history
entry, no wake-up; consuming a signal makes room again. A signal the instance is parked
waiting for is always taken, so other names cannot lock it out. Concurrent senders cannot
overshoot: the count and the insert are one transaction with the instance locked.
"""

from __future__ import annotations

import asyncio

import pytest

from sayiir_core import Backend, SignalBufferFullError, Status
from sayiir_core.backends.rules import MAX_BUFFERED_SIGNALS
from sayiir_core.testing._support import NOW, BackendFixtures, claimed, create, step


async def fill(backend: Backend, count: int, instance_id: str = "i-1") -> None:
    """Buffer ``count`` signals, alternating between two names (the bound is per instance)."""
    for n in range(count):
        await backend.send_signal(instance_id, "a" if n % 2 else "b", b"%d" % n, NOW)


async def signals_sent(backend: Backend, instance_id: str = "i-1") -> int:
    return sum(event.kind == "signal_sent" for event in await backend.history(instance_id))


class SignalBoundContract(BackendFixtures):
    """``send_signal`` refuses the signal beyond ``MAX_BUFFERED_SIGNALS`` per instance."""

    async def test_signals_beyond_the_bound_are_refused_and_not_stored(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)
        await create(backend, "i-2")
        await fill(backend, MAX_BUFFERED_SIGNALS)
        history_before = await backend.history("i-1")

        with pytest.raises(SignalBufferFullError, match=r"'i-1'.*1000") as refused:
            await backend.send_signal("i-1", "c", b"one too many", NOW + 1)

        assert (refused.value.instance_id, refused.value.signal_name) == ("i-1", "c")
        assert refused.value.limit == MAX_BUFFERED_SIGNALS
        assert await backend.next_signal("i-1", "c") is None
        assert await backend.history("i-1") == history_before
        # The bound is per instance: another one still takes signals.
        await backend.send_signal("i-2", "c", b"fine", NOW + 1)

        # Consuming one signal makes room for exactly one more.
        first = await backend.next_signal("i-1", "b")
        assert first is not None
        await backend.commit("i-1", token, step(consumed_signal=first.signal_id))
        await backend.send_signal("i-1", "c", b"now it fits", NOW + 2)
        with pytest.raises(SignalBufferFullError):
            await backend.send_signal("i-1", "c", b"full again", NOW + 3)
        buffered = await backend.next_signal("i-1", "c")
        assert buffered is not None
        assert buffered.payload == b"now it fits"
        assert await signals_sent(backend) == MAX_BUFFERED_SIGNALS + 1

    async def test_a_full_buffer_still_takes_the_signal_the_instance_waits_for(
        self, backend: Backend
    ) -> None:
        """Other names must not lock a parked instance out of the signal it waits for."""
        token = await claimed(backend)
        parked = step(
            Status.AWAITING_SIGNAL,
            wake_at=None,
            release=True,
            control={"signals": {"approval": "approve"}},
        )
        await backend.commit("i-1", token, parked)
        await fill(backend, MAX_BUFFERED_SIGNALS)
        with pytest.raises(SignalBufferFullError):
            await backend.send_signal("i-1", "noise", b"", NOW + 2)

        await backend.send_signal("i-1", "approve", b"yes", NOW + 2)

        awaited = await backend.next_signal("i-1", "approve")
        assert awaited is not None
        assert awaited.payload == b"yes"
        record = await backend.get_record("i-1")
        assert record is not None
        assert record.wake_at == NOW + 2  # and it woke the instance

    async def test_concurrent_senders_cannot_overshoot_the_bound(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        await create(backend)
        room = 3
        await fill(backend, MAX_BUFFERED_SIGNALS - room)

        sends = [
            sender.send_signal("i-1", "race", b"%d" % n, NOW + 1)
            for n, sender in enumerate([backend, other_backend] * room)
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)

        refused = [outcome for outcome in outcomes if outcome is not None]
        assert len(refused) == len(sends) - room, outcomes
        assert all(isinstance(outcome, SignalBufferFullError) for outcome in refused), outcomes
        assert await signals_sent(backend) == MAX_BUFFERED_SIGNALS
