"""``StepQueue.claim_step``: a dispatcher claims the one step it was told about.

The seam of the Celery bridge: its message names the instance, the step and the
attempt; the worker that receives it claims exactly that step and gets a fencing token.
Run over every backend with the step queue (memory and PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import pytest
from postgres_service import WireProxy

from sayiir_core.backends import ConflictPolicy, ControlRequest, NewInstance, StepWrite
from sayiir_core.backends.base import Backend
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.step_queue import (
    ClaimedStep,
    StepQueue,
    StepRef,
    StepResult,
    StepTicket,
)
from sayiir_core.status import Status

NOW = 1_000.0
TTL = 30.0
HASH = "hash-1"
REF = StepRef("i-1", "b", 1)
TICKET = StepTicket(REF, "wf", HASH, b"7", 3, NOW)


class QueueBackend(Backend, StepQueue, Protocol):
    """A backend with the shared step queue."""


Opener = Callable[[], Awaitable[QueueBackend]]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def opener(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """Each call: an opened backend on this test's storage (PostgreSQL: a new object,
    as another process would have; memory: the one object)."""
    opened: list[QueueBackend] = []
    memory = InMemoryBackend()

    async def open_backend() -> QueueBackend:
        if request.param == "memory":
            backend: QueueBackend = memory
        else:
            backend = request.getfixturevalue("make_postgres_backend")()
        await backend.open()
        opened.append(backend)
        return backend

    yield open_backend
    for backend in opened:
        await backend.close()


async def published(backend: QueueBackend, *tickets: StepTicket) -> int:
    """Create and claim the instance (the orchestrator), publish ``tickets`` (default: b)."""
    await backend.create(
        NewInstance("i-1", "wf", HASH, b"1", Status.PENDING, NOW), ConflictPolicy.FAIL
    )
    orchestrator = await backend.claim("i-1", "orchestrator", TTL, NOW)
    await backend.publish_steps(list(tickets) or [TICKET])
    return orchestrator.token


def succeeded(worker_id: str, output: bytes = b"8") -> StepResult:
    return StepResult(worker_id, NOW + 1, NOW + 2, output=output)


async def test_the_named_step_is_claimed_with_its_ticket_and_a_token(opener: Opener) -> None:
    backend = await opener()
    await published(backend, TICKET, StepTicket(StepRef("i-1", "c", 1), "wf", HASH, b"9", 3, NOW))

    claim = await backend.claim_step(REF, "w2", TTL, NOW)

    assert claim is not None
    assert claim.ticket == TICKET
    assert await backend.renew_step(REF, claim.token, TTL, NOW + 5)
    # Only that step: its sibling is still there for anyone.
    (other,) = await backend.claim_steps("w3", {"wf": HASH}, TTL, NOW, 10)
    assert other.ticket.ref == StepRef("i-1", "c", 1)


async def test_a_second_claim_of_a_held_step_gets_none(opener: Opener) -> None:
    backend = await opener()
    await published(backend)
    first = await backend.claim_step(REF, "w2", TTL, NOW)
    assert first is not None

    assert await backend.claim_step(REF, "w3", TTL, NOW + 1) is None
    # The same message delivered twice to the same worker claims nothing either.
    assert await backend.claim_step(REF, "w2", TTL, NOW + 1) is None
    assert await backend.claim_steps("w3", {"wf": HASH}, TTL, NOW + 1, 10) == []
    assert await backend.finish_step(REF, first.token, succeeded("w2"))


async def test_of_concurrent_claims_exactly_one_wins(opener: Opener) -> None:
    backends = [await opener() for _ in range(6)]
    await published(backends[0])

    claims = await asyncio.gather(
        *(backend.claim_step(REF, f"w{n}", TTL, NOW) for n, backend in enumerate(backends))
    )

    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1


async def test_an_expired_lease_is_taken_over_and_the_old_token_is_fenced(
    opener: Opener,
) -> None:
    backend = await opener()
    await published(backend)
    frozen = await backend.claim_step(REF, "w2", TTL, NOW)
    assert frozen is not None

    assert await backend.claim_step(REF, "w3", TTL, NOW + TTL - 1) is None  # still live
    takeover = await backend.claim_step(REF, "w3", TTL, NOW + TTL)  # lease_until <= now

    assert takeover is not None
    assert takeover.ticket == TICKET
    assert takeover.token > frozen.token
    assert not await backend.renew_step(REF, frozen.token, TTL, NOW + TTL + 1)
    assert not await backend.finish_step(REF, frozen.token, succeeded("w2", b"stale"))
    assert await backend.finish_step(REF, takeover.token, succeeded("w3"))
    assert (await backend.step_results([REF]))[REF].worker_id == "w3"


async def test_a_finished_step_is_not_claimable_even_after_its_lease(opener: Opener) -> None:
    backend = await opener()
    await published(backend)
    claim = await backend.claim_step(REF, "w2", TTL, NOW)
    assert claim is not None
    assert await backend.finish_step(REF, claim.token, succeeded("w2"))

    assert await backend.claim_step(REF, "w3", TTL, NOW + 10 * TTL) is None
    assert (await backend.step_results([REF]))[REF].output == b"8"


async def test_a_step_never_published_is_not_claimable(opener: Opener) -> None:
    backend = await opener()
    await published(backend)

    assert await backend.claim_step(StepRef("i-1", "b", 2), "w2", TTL, NOW) is None  # attempt
    assert await backend.claim_step(StepRef("i-1", "zz", 1), "w2", TTL, NOW) is None  # key
    assert await backend.claim_step(StepRef("nope", "b", 1), "w2", TTL, NOW) is None
    assert await backend.claim_step(REF, "w2", TTL, NOW) is not None  # the real one is


async def test_a_withdrawn_step_is_not_claimable(opener: Opener) -> None:
    backend = await opener()
    token = await published(backend)
    # The orchestrator ran it itself and checkpointed it: the queue row goes.
    write = StepWrite(Status.RUNNING, {}, NOW + 3, checkpoints=[("b", b"8")])
    await backend.commit("i-1", token, write)

    assert await backend.claim_step(REF, "w2", TTL, NOW + 4) is None


async def test_no_step_of_a_finished_instance_is_claimable(opener: Opener) -> None:
    backend = await opener()
    token = await published(backend)
    await backend.commit("i-1", token, StepWrite(Status.FAILED, {}, NOW + 3))

    assert await backend.claim_step(REF, "w2", TTL, NOW + 4) is None


async def test_no_step_of_a_cancelled_instance_is_claimable(opener: Opener) -> None:
    backend = await opener()
    token = await published(backend)
    await backend.request_control("i-1", ControlRequest.CANCEL, "stop", "ops", NOW + 1)
    # The orchestrator honours the request at its next checkpoint.
    await backend.commit("i-1", token, StepWrite(Status.CANCELLED, {}, NOW + 2))

    assert await backend.claim_step(REF, "w2", TTL, NOW + 3) is None


# -- PostgreSQL: one statement, one round trip --------------------------------------------


@pytest.mark.postgres
async def test_a_named_claim_costs_one_round_trip(postgres_schema: tuple[str, str]) -> None:
    from sayiir_core.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    backend = PostgresBackend(proxy.url(url), schema=schema, max_connections=1)
    await backend.open()
    try:
        await published(backend)
        await backend.claim_step(StepRef("i-1", "none", 1), "w", TTL, NOW)  # prepares it
        proxy.round_trips = 0

        claims: list[ClaimedStep | None] = [
            await backend.claim_step(REF, "w2", TTL, NOW) for _ in range(5)
        ]

        assert proxy.round_trips == 5
        assert [claim is not None for claim in claims] == [True, False, False, False, False]
    finally:
        await backend.close()
        await proxy.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("after_sending", [True, False])
async def test_a_named_claim_whose_reply_was_lost_is_found_or_made_again(
    make_postgres_backend: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, after_sending: bool
) -> None:
    """The connection drops with the claim sent (applied or not): the caller still gets
    the claim, instead of ``None`` for a step its own lost claim now holds."""
    from sayiir_core.backends.postgres import session as session_module

    backend = make_postgres_backend()
    await backend.open()
    await published(backend)
    statement = backend._steps.statements.claim_one
    original = session_module.Attempt.write
    lost = False

    async def write(self: Any, conn: Any, text: str, *args: Any) -> list[Any]:
        nonlocal lost
        if text != statement or lost:
            return await original(self, conn, text, *args)
        lost = True
        self.in_doubt, self.statement = True, text
        if after_sending:
            await original(self, conn, text, *args)
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    monkeypatch.setattr(session_module.Attempt, "write", write)

    try:
        claim = await backend.claim_step(REF, "w2", TTL, NOW)

        assert lost
        assert claim is not None
        assert await backend.finish_step(REF, claim.token, succeeded("w2"))
    finally:
        await backend.close()
