"""The shared step queue (``StepQueue``), run against every backend that offers it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from sayiir_core.backends import Backend, ConflictPolicy, ControlRequest, StepWrite
from sayiir_core.backends.step_queue import StepQueue, StepRef, StepResult, StepTicket
from sayiir_core.errors import PayloadTooLargeError
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status

from .test_backend_contract import HASH, NOW, TTL, claimed, new

WORKFLOWS = {"wf": HASH}


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The backends with a step queue (SQLite workers run every step themselves)."""
    kind: str = request.param
    return kind


@pytest.fixture
def queue(backend: Backend) -> Any:
    assert isinstance(backend, StepQueue)
    return backend


def ref(key: str = "b", attempt: int = 1, instance_id: str = "i-1") -> StepRef:
    return StepRef(instance_id, key, attempt)


def ticket(
    key: str = "b",
    attempt: int = 1,
    *,
    instance_id: str = "i-1",
    priority: int = 3,
    now: float = NOW,
    definition_hash: str = HASH,
    input: bytes = b"7",
) -> StepTicket:
    return StepTicket(ref(key, attempt, instance_id), "wf", definition_hash, input, priority, now)


def succeeded(output: bytes = b"8", worker_id: str = "w2") -> StepResult:
    return StepResult(worker_id, NOW + 1, NOW + 2, output=output)


def commit(checkpoints: list[tuple[str, bytes]], status: Status = Status.RUNNING) -> StepWrite:
    return StepWrite(status=status, control={}, now=NOW + 3, checkpoints=checkpoints)


async def test_a_published_step_is_claimed_once(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket()])

    (first,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10)
    assert first.ticket == ticket()
    assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW, 10) == []

    # Publishing it again (an orchestrator that took over) changes nothing.
    await queue.publish_steps([ticket(input=b"other")])
    assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + 1, 10) == []


async def test_claims_match_the_definition_and_keep_priority_order(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps(
        [
            ticket("late", now=NOW + 2),
            ticket("early", now=NOW + 1),
            ticket("urgent", now=NOW + 3, priority=1),
            ticket("other-definition", definition_hash="hash-2"),
        ]
    )

    claims = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 2)
    assert [c.ticket.ref.step_key for c in claims] == ["urgent", "early"]
    claims = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 10)
    assert [c.ticket.ref.step_key for c in claims] == ["late"]
    assert await queue.claim_steps("w2", {"other": HASH}, TTL, NOW + 5, 10) == []
    (other,) = await queue.claim_steps("w2", {"wf": "hash-2"}, TTL, NOW + 5, 10)
    assert other.ticket.ref.step_key == "other-definition"


async def test_an_expired_step_lease_is_taken_over_and_fences_the_old_owner(
    queue: Any,
) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket()])
    (old,) = await queue.claim_steps("zombie", WORKFLOWS, TTL, NOW, 1)
    assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL - 1, 1) == []

    (new_claim,) = await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL, 1)
    assert new_claim.token == old.token + 1

    assert not await queue.renew_step(ref(), old.token, TTL, NOW + TTL + 1)
    assert not await queue.finish_step(ref(), old.token, succeeded(b"zombie", "zombie"))
    assert await queue.step_results([ref()]) == {}
    assert await queue.finish_step(ref(), new_claim.token, succeeded(b"8", "w3"))
    assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "w3")}
    # The zombie, later still, cannot overwrite the stored outcome either.
    assert not await queue.finish_step(ref(), old.token, succeeded(b"zombie", "zombie"))
    assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "w3")}


async def test_a_renewed_step_lease_is_not_taken_over(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket()])
    (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)

    assert await queue.renew_step(ref(), claim.token, TTL, NOW + TTL - 1)
    assert await queue.claim_steps("w3", WORKFLOWS, TTL, NOW + TTL + 1, 1) == []
    assert await queue.finish_step(ref(), claim.token, succeeded())
    assert not await queue.renew_step(ref(), claim.token, TTL, NOW + 2)  # finished


async def test_a_failed_attempt_keeps_its_error_retryability_and_traceback(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket()])
    (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
    error = ErrorInfo("ValueError", "bad \u0000 input", "b", "task")
    failed = StepResult("w2", NOW, NOW + 1, error=error, retryable=True, traceback="Trace")

    assert await queue.finish_step(ref(), claim.token, failed)

    assert await queue.step_results([ref(), ref("other")]) == {ref(): failed}


async def test_results_are_only_those_of_finished_steps(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket("b"), ticket("c"), ticket("d")])
    claims = {
        c.ticket.ref.step_key: c for c in await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 2)
    }
    assert set(claims) == {"b", "c"}
    assert await queue.finish_step(ref("c"), claims["c"].token, succeeded(b"3"))

    assert await queue.step_results([ref("b"), ref("c"), ref("d"), ref("c", 2)]) == {
        ref("c"): succeeded(b"3")
    }


async def test_a_checkpoint_removes_every_attempt_of_its_step(queue: Any) -> None:
    token = await claimed(queue)
    await queue.publish_steps([ticket("b", 1), ticket("b", 2), ticket("c")])
    for claim in await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10):
        await queue.finish_step(claim.ticket.ref, claim.token, succeeded())

    await queue.commit("i-1", token, commit([("b", b"8")]))

    refs = [ref("b", 1), ref("b", 2), ref("c")]
    assert set(await queue.step_results(refs)) == {ref("c")}
    await queue.commit("i-1", token, commit([], Status.FAILED))
    assert await queue.step_results(refs) == {}


async def test_cancelling_an_instance_nobody_runs_drops_its_steps(queue: Any) -> None:
    token = await claimed(queue)
    await queue.publish_steps([ticket("b"), ticket("c")])
    (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
    await queue.finish_step(claim.ticket.ref, claim.token, succeeded())
    await queue.commit("i-1", token, StepWrite(Status.RUNNING, {}, NOW, release=True))

    await queue.request_control("i-1", ControlRequest.CANCEL, "stop", "test", NOW + 1)

    assert await queue.step_results([ref("b"), ref("c")]) == {}  # the finished one too
    assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 2, 10) == []
    # Published again, the queued one would still not be claimed for a cancelled instance.
    await queue.publish_steps([ticket("d")])
    assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 2, 10) == []


async def test_a_step_published_again_never_reuses_an_old_token(queue: Any) -> None:
    """A step deleted with its instance and published by the new one: the old claimant's
    token must not fence in the new claim (terminate_existing, retry_from)."""
    await claimed(queue)
    await queue.publish_steps([ticket()])
    (old,) = await queue.claim_steps("old", WORKFLOWS, TTL, NOW, 1)
    await queue.create(new(now=NOW + 1), ConflictPolicy.TERMINATE_EXISTING)
    await queue.claim("i-1", "w1", TTL, NOW + 1)
    await queue.publish_steps([ticket(input=b"new input")])

    (fresh,) = await queue.claim_steps("new", WORKFLOWS, TTL, NOW + 2, 1)

    assert fresh.token != old.token
    assert fresh.ticket.input == b"new input"
    assert not await queue.renew_step(ref(), old.token, TTL, NOW + 3)
    assert not await queue.finish_step(ref(), old.token, succeeded(b"stale", "old"))
    assert await queue.finish_step(ref(), fresh.token, succeeded(b"8", "new"))
    assert await queue.step_results([ref()]) == {ref(): succeeded(b"8", "new")}


async def test_claims_can_be_limited_to_some_instances(queue: Any) -> None:
    await claimed(queue, "i-1")
    await claimed(queue, "i-2")
    await queue.publish_steps([ticket(instance_id="i-1"), ticket(instance_id="i-2")])

    (only,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10, instances={"i-2"})
    assert only.ticket.ref.instance_id == "i-2"
    assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10, instances=set()) == []
    (rest,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 10)
    assert rest.ticket.ref.instance_id == "i-1"


async def test_retry_from_and_terminate_existing_drop_queued_steps(queue: Any) -> None:
    token = await claimed(queue)
    await queue.commit("i-1", token, commit([("a", b"1")]))
    await queue.publish_steps([ticket("b")])
    await queue.commit("i-1", token, StepWrite(Status.RUNNING, {}, NOW, release=True))

    await queue.reset_from("i-1", "a", NOW + 4)
    assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 5, 10) == []

    await queue.claim("i-1", "w1", TTL, NOW + 5)
    await queue.publish_steps([ticket("b")])
    await queue.create(new(now=NOW + 6), ConflictPolicy.TERMINATE_EXISTING)
    assert await queue.claim_steps("w2", WORKFLOWS, TTL, NOW + 7, 10) == []


async def test_finishing_a_step_wakes_a_waiting_orchestrator(queue: Any) -> None:
    await claimed(queue)
    await queue.publish_steps([ticket()])
    (claim,) = await queue.claim_steps("w2", WORKFLOWS, TTL, NOW, 1)
    await queue.wait_for_step_results(0.05)  # PostgreSQL: sets up its LISTEN
    waiting = asyncio.create_task(queue.wait_for_step_results(30.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()

    assert await queue.finish_step(ref(), claim.token, succeeded())
    await asyncio.wait_for(waiting, 10.0)  # far less than its 30 s: it was woken
    assert time.monotonic() - started < 10.0


async def test_publishing_wakes_idle_workers(queue: Any) -> None:
    await claimed(queue)
    await queue.wait_for_work(0.05)
    waiting = asyncio.create_task(queue.wait_for_work(30.0))
    await asyncio.sleep(0.1)

    await queue.publish_steps([ticket()])

    await asyncio.wait_for(waiting, 10.0)


@pytest.mark.postgres
async def test_an_oversized_step_input_is_refused_before_anything_is_written(
    postgres_schema: tuple[str, str],
) -> None:
    from sayiir_core.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema, max_payload_bytes=100)
    await backend.open()
    try:
        await claimed(cast("Backend", backend))
        with pytest.raises(PayloadTooLargeError, match="input of step 'b'"):
            await backend.publish_steps([ticket("c"), ticket("b", input=b"x" * 101)])
        assert await backend.claim_steps("w2", WORKFLOWS, TTL, NOW, 10) == []
    finally:
        await backend.close()
