"""A worker claims an instance again only when there is something to do: no claim loop.

Suspected once: after a signal and then a pause sent while the worker holds the claim,
the worker would claim the paused instance over and over. These count the claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from sayiir_core import (
    AsyncWorkflowClient,
    Backend,
    Flow,
    InMemoryBackend,
    InvalidStateError,
    SqliteBackend,
    Worker,
)
from sayiir_core.backends.base import BufferedSignal, Claim, ControlRequest, StepWrite
from sayiir_core.status import Status

from .helpers import wait_until_async

POLL = 0.02
WINDOW_POLLS = 25  # the window in which claims are counted, in poll intervals


class ClaimCounter:
    """Counts the ``claim_next`` calls a backend answers, and the claims it hands out."""

    def __init__(self) -> None:
        self.calls = 0
        self.claims: list[str] = []

    def saw(self, claims: list[Claim]) -> list[Claim]:
        self.calls += 1
        self.claims.extend(claim.instance.record.instance_id for claim in claims)
        return claims


class CountingMemory(InMemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.counter = ClaimCounter()

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        return self.counter.saw(await super().claim_next(owner, workflows, ttl, now, limit))


class CountingSqlite(SqliteBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.counter = ClaimCounter()

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        return self.counter.saw(await super().claim_next(owner, workflows, ttl, now, limit))


@pytest.fixture(params=["memory", "sqlite"])
async def counting(
    request: pytest.FixtureRequest, tmp_path: Path
) -> CountingMemory | CountingSqlite:
    backend: CountingMemory | CountingSqlite
    if request.param == "memory":
        backend = CountingMemory()
    else:
        backend = CountingSqlite(tmp_path / "claims.db")
    return backend


@pytest.mark.parametrize("held", [True, False], ids=["claim-held", "parked"])
async def test_signal_then_pause_does_not_make_the_worker_claim_in_a_loop(
    counting: CountingMemory | CountingSqlite, held: bool
) -> None:
    backend: Backend = counting
    gate = asyncio.Event()
    if not held:
        gate.set()

    async def prepare(value: int) -> int:
        await gate.wait()
        return value

    def conclude(decision: str) -> str:
        return f"decided: {decision}"

    workflow = (
        Flow("claims").then(prepare).wait_for_signal("approve", name="approval").then(conclude)
    ).build()
    client = AsyncWorkflowClient(backend)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        Worker("w", backend, poll_interval=POLL, claim_ttl=300.0).run([workflow], stop=stop)
    )
    try:
        await client.submit(workflow, "c-1", 1)

        async def claimed_once() -> bool:
            return counting.counter.claims == ["c-1"]

        await wait_until_async(claimed_once, what="the first claim")
        if not held:

            async def parked() -> bool:
                return (await client.status("c-1")).status == "awaiting_signal"

            await wait_until_async(parked, what="the signal wait")
        # Held: the claim is the worker's while prepare waits for its gate. Parked: the
        # signal wakes the instance and the pause lands while the worker takes it.
        await client.send_signal("c-1", "approve", "yes")
        with contextlib.suppress(InvalidStateError):  # parked: it may have finished first
            await client.pause("c-1", reason="check")
        gate.set()

        async def paused() -> bool:
            return (await client.status("c-1")).is_paused()

        async def finished() -> bool:
            return (await client.status("c-1")).is_finished()

        await wait_until_async(lambda: _either(paused, finished), what="the pause to settle")
        claims_before, calls_before = len(counting.counter.claims), counting.counter.calls
        await asyncio.sleep(POLL * WINDOW_POLLS)
        # Idle: one claim_next per poll interval at most (a loop makes thousands), and no
        # claim of a paused instance.
        assert counting.counter.calls - calls_before <= 2 * WINDOW_POLLS
        assert len(counting.counter.claims) == claims_before
        if (await client.status("c-1")).is_paused():
            await client.unpause("c-1")
        status = await client.wait("c-1", timeout=20)
        assert status.output == "decided: yes"
        assert counting.counter.claims.count("c-1") <= 4  # first, signal, unpause, a retake
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
        await backend.close()


async def _either(*checks: Callable[[], Awaitable[bool]]) -> bool:
    for check in checks:
        if await check():
            return True
    return False


class SignalOnPark(CountingMemory):
    """Sends the awaited signal just after the instance parks, and is slow to show it.

    That is the window in which the worker's claim loop (woken by the signal) and the
    instance's own runner (which checks for a signal after parking and takes the
    instance back) both claim it; the slow ``next_signal`` makes the claim loop first.
    """

    def __init__(self, signal: str) -> None:
        super().__init__()
        self._signal = signal
        self._sent = False

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        request = await super().commit(instance_id, token, write)
        if write.release and write.status is Status.AWAITING_SIGNAL and not self._sent:
            self._sent = True
            await self.send_signal(instance_id, self._signal, b'"yes"', time.time())
        return request

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        if self._sent:
            await asyncio.sleep(POLL * 5)
        return await super().next_signal(instance_id, name)


async def test_a_signal_right_after_parking_runs_the_instance_once_not_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = SignalOnPark("approve")
    calls: list[str] = []

    def prepare(value: int) -> int:
        return value

    def conclude(decision: str) -> str:
        calls.append(decision)
        return f"decided: {decision}"

    workflow = (
        Flow("claims-race").then(prepare).wait_for_signal("approve", name="approval").then(conclude)
    ).build()
    client = AsyncWorkflowClient(backend)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        Worker("w", backend, poll_interval=POLL, claim_ttl=300.0).run([workflow], stop=stop)
    )
    try:
        await client.submit(workflow, "r-1", 1)
        status = await client.wait("r-1", timeout=20)
        await asyncio.sleep(POLL * 10)  # a second run of the instance would show by now
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
    assert status.output == "decided: yes"
    assert calls == ["yes"]
    refused = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert not refused, [r.getMessage() for r in refused]
