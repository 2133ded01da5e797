"""A chain's next step claimed by the commit of the step before (``dispatch/chain.py``).

``Dispatcher.run_step(..., chain=link)`` over real backends (in memory, PostgreSQL),
without Celery: what the bridge's continuation relies on. The round trips it saves are
counted in test_advance_queue.py; the Celery side in test_chain_continuation.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from sayiir_core import Flow, task
from sayiir_core.backends.base import Backend, StepWrite
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.step_queue import NextStepClaim, StepRef, StepTicket
from sayiir_core.runtime import LocalExecutor
from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.dispatch import Dispatcher, StepRun
from sayiir_core.runtime.dispatch.chain import ChainLink
from sayiir_core.status import Status

RAN: Counter[str] = Counter()


@task("one")
def one(x: int) -> int:
    RAN["one"] += 1
    return x + 1


@task("two")
def two(x: int) -> int:
    RAN["two"] += 1
    return x * 10


@task("three")
def three(x: int) -> int:
    RAN["three"] += 1
    return x + 3


CHAIN = Flow("chain3").then(one).then(two).then(three).build()
START = 1_000_000.0


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    RAN.clear()
    if request.param == "memory":
        opened: Backend = InMemoryBackend()
    else:
        opened = request.getfixturevalue("make_postgres_backend")()
    await opened.open()
    yield opened
    await opened.close()


class Node:
    """One worker process: a dispatcher whose sends land in ``sent``, on a shared clock."""

    def __init__(self, backend: Backend, owner: str, now: list[float]) -> None:
        self.sent: list[StepTicket] = []
        self.dispatcher = Dispatcher(
            backend,
            [CHAIN],
            self.send,
            executor=LocalExecutor(),
            owner_id=owner,
            step_lease=10.0,
            redispatch_after=5.0,
            clock=lambda: now[0],
        )

    async def send(self, tickets: Sequence[StepTicket], token: int) -> None:
        self.sent.extend(tickets)

    async def run(self, ticket: StepTicket, link: ChainLink | None = None) -> StepRun:
        return await self.dispatcher.run_step(
            ticket.ref, ticket.workflow_id, ticket.definition_hash, chain=link
        )


async def first_step(backend: Backend, node: Node, instance_id: str) -> StepTicket:
    await InstanceControl(backend).submit(CHAIN, instance_id, 1)
    await node.dispatcher.advance(instance_id)
    (ticket,) = node.sent
    node.sent.clear()
    return ticket


async def test_a_chain_goes_on_without_a_message_or_a_claim(backend: Backend) -> None:
    node = Node(backend, "w1", [START])
    ticket = await first_step(backend, node, "c")
    link = ChainLink(lambda _: True)
    steps = []

    assert await node.run(ticket, link) is StepRun.RAN
    while link.next is not None:
        claimed, link = link.next, ChainLink(lambda _: True)
        steps.append(claimed.step.ticket.ref.step_key)
        assert claimed.instance is not None  # the advance after it needs no claim
        ref = claimed.step.ticket.ref
        run = await node.dispatcher.run_step(
            ref, "chain3", CHAIN.definition_hash, claimed=claimed, chain=link
        )
        assert run is StepRun.RAN

    assert steps == ["two", "three"]
    assert node.sent == []  # nothing went out after the first step's message
    record = await backend.get_record("c")
    assert record is not None
    assert (record.status, record.output, record.owner) == (Status.COMPLETED, b"23", None)
    assert Counter({"one": 1, "two": 1, "three": 1}) == RAN


async def test_a_step_the_caller_does_not_want_goes_out_as_a_message(backend: Backend) -> None:
    node = Node(backend, "w1", [START])
    ticket = await first_step(backend, node, "m")
    link = ChainLink(lambda _: False)

    assert await node.run(ticket, link) is StepRun.RAN

    assert link.next is None
    assert [t.ref.step_key for t in node.sent] == ["two"]
    record = await backend.get_record("m")
    assert record is not None
    assert record.owner is None


async def test_a_process_that_dies_holding_the_next_step_leaves_it_to_the_sweeper(
    backend: Backend,
) -> None:
    """It claimed step two with step one's commit, then died before running it: the
    step's message is never sent; once the leases and the re-dispatch time are over,
    another process's sweep sends it again and the chain completes, each step once."""
    now = [START]
    dead, other = Node(backend, "dead", now), Node(backend, "other", now)
    link = ChainLink(lambda _: True)
    assert await dead.run(await first_step(backend, dead, "k"), link) is StepRun.RAN
    assert link.next is not None
    held = link.next.step.ticket
    # A copy of its message while the lease is live claims nothing.
    assert await other.run(held) is StepRun.DROPPED
    assert await other.dispatcher.sweep() == 0  # its instance is held, not due

    now[0] += 11.0  # past the step's lease (10 s), the instance's and the re-dispatch time
    assert await other.dispatcher.sweep() == 1

    assert [t.ref for t in other.sent] == [held.ref]
    assert await other.run(other.sent.pop()) is StepRun.RAN  # a takeover of the step
    assert await other.run(other.sent.pop()) is StepRun.RAN
    record = await backend.get_record("k")
    assert record is not None
    assert (record.status, record.output) == (Status.COMPLETED, b"23")
    assert Counter({"one": 1, "two": 1, "three": 1}) == RAN


@pytest.mark.postgres
@pytest.mark.parametrize("applied", [True, False])
async def test_a_chain_commit_whose_reply_was_lost_hands_over_exactly_once(
    make_postgres_backend: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    """The connection dies with the commit in doubt (``applied``: after the server ran
    it): the caller learns what it did, claims included, and nothing is done twice."""
    from sayiir_core.backends.postgres import session as session_module

    backend = make_postgres_backend()
    await backend.open()
    try:
        await InstanceControl(backend).submit(CHAIN, "r", 1)
        claim = await backend.claim_if_free("r", "w1", {"chain3": CHAIN.definition_hash}, 30, 1.0)
        assert claim is not None
        ticket = StepTicket(StepRef("r", "two", 1), "chain3", CHAIN.definition_hash, b"2", 3, 1.0)
        write = StepWrite(
            Status.WAITING,
            {"dispatched": {"two": 1}},
            2.0,
            checkpoints=[("one", b"2")],
            release=True,
        )
        original = session_module.Attempt.write
        lost: list[str] = []

        async def write_then_lose(self: Any, conn: Any, text: str, *args: Any) -> list[Any]:
            if lost or "nextval" not in text or "sayiir_checkpoints" not in text:
                return await original(self, conn, text, *args)
            lost.append(text)
            self.in_doubt, self.statement = True, text
            if applied:
                await original(self, conn, text, *args)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        monkeypatch.setattr(session_module.Attempt, "write", write_then_lose)

        done = await backend.commit_and_claim_next(
            claim, write, [ticket], NextStepClaim("w1", 10.0, 5.0, 2.0)
        )

        assert lost  # the reply was lost once
        assert done.next is not None
        assert done.next.instance is not None
        record = await backend.get_record("r")
        assert record is not None
        assert (record.owner, record.claim_token) == ("w1", claim.token + 1)
        assert done.next.instance.token == record.claim_token
        assert done.next.instance.instance.record == record
        step = done.next.step
        assert await backend.renew_step(step.ticket.ref, step.token, 10.0, 3.0)
        assert await backend.claim_step(step.ticket.ref, "w2", 10.0, 3.0) is None
        assert [e.kind for e in await backend.history("r")].count("task_completed") <= 1
        assert await backend.get_checkpoint("r", "one") == b"2"
    finally:
        await backend.close()
