"""The lease heartbeat of ``DurableRunner`` (``runtime/lease_heartbeat.py``).

A run renews its claim every ``lease_ttl / 3``; a renewal that finds the claim taken
over stops the run with ``LeaseLostError``; one that fails is retried at the next beat;
no beat outlives the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from sayiir_core import Flow, InMemoryBackend, LeaseLostError
from sayiir_core.runtime import DurableRunner, LocalExecutor
from sayiir_core.workflow.workflow import Workflow

LEASE = 0.3  # a beat every 0.1 s


class RenewCountingBackend(InMemoryBackend):
    """The in-memory backend, counting renewals; the first ``failures`` ones fail."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.renewals = 0
        self.failures = failures

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        self.renewals += 1
        if self.renewals <= self.failures:
            raise ConnectionError("the database is unreachable for now")
        return await super().renew(instance_id, token, ttl, now)


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def _gated(gate: asyncio.Event) -> Workflow:
    async def wait(x: int) -> int:
        await gate.wait()
        return x + 1

    return Flow("gated").then(wait, name="wait").build()


async def test_a_renewal_that_finds_the_claim_taken_stops_the_run() -> None:
    backend = RenewCountingBackend()
    runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-1", lease_ttl=LEASE)
    run = asyncio.create_task(runner.run(_gated(asyncio.Event()), "taken", 0))
    await asyncio.sleep(0.05)
    await backend.claim("taken", "w-2", 30.0, 0.0)  # another owner takes it over

    with pytest.raises(LeaseLostError, match="lease lost to another owner"):
        await asyncio.wait_for(run, 2.0)
    record = await backend.get_record("taken")
    assert record is not None
    assert record.owner == "w-2"


async def test_a_failed_renewal_is_retried_at_the_next_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = RenewCountingBackend(failures=1)
    gate = asyncio.Event()
    runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-1", lease_ttl=LEASE)
    with caplog.at_level(logging.WARNING, logger="sayiir.engine"):
        run = asyncio.create_task(runner.run(_gated(gate), "flaky", 0))
        await _until(lambda: backend.renewals >= 2)  # one failed, then one more beat
        gate.set()
        status = await asyncio.wait_for(run, 2.0)

    assert status.output == 1
    assert backend.renewals >= 2
    assert "lease renewal failed; retrying" in caplog.text


async def test_no_beat_outlives_the_run() -> None:
    backend = RenewCountingBackend()
    gate = asyncio.Event()
    runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-1", lease_ttl=LEASE)
    run = asyncio.create_task(runner.run(_gated(gate), "done", 0))
    await _until(lambda: backend.renewals >= 1)
    gate.set()
    await asyncio.wait_for(run, 2.0)
    renewals = backend.renewals

    await asyncio.sleep(0.3)

    assert backend.renewals == renewals
