"""``AdvanceQueue``: the two writes of a dispatched advance, and what they cost.

What the two do is the backend contract's (``sayiir_core.testing.advance_queue_contract``,
run on every backend); here: the shipped backends implement them natively, a
PostgreSQL claim that waited on a commit, and what a step costs. The round-trip test
counts what one step of a dispatched workflow costs on PostgreSQL, so it cannot creep
back up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import pytest
from postgres_service import WireProxy

from sayiir_core import Flow, task
from sayiir_core.backends import ConflictPolicy, NewInstance
from sayiir_core.backends.base import Backend
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.step_queue import (
    AdvanceQueue,
    StepRef,
    StepTicket,
    advance_queue,
)
from sayiir_core.runtime import LocalExecutor
from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.dispatch import Dispatcher, StepRun
from sayiir_core.status import Status
from sayiir_core.workflow.workflow import Workflow

NOW = 1_000.0
TTL = 30.0
HASH = "hash-1"
WANTED = {"wf": HASH}


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        opened: Backend = InMemoryBackend()
    else:
        opened = request.getfixturevalue("make_postgres_backend")()
    await opened.open()
    yield opened
    await opened.close()


async def created(backend: Backend, status: Status = Status.PENDING) -> None:
    new = NewInstance("i-1", "wf", HASH, b"1", status, NOW)
    await backend.create(new, ConflictPolicy.FAIL)


async def test_the_shipped_step_queues_have_the_atomic_advance(backend: Backend) -> None:
    """No shipped backend with a step queue falls back to a read then a claim (racy)."""
    assert isinstance(backend, AdvanceQueue)
    assert advance_queue(backend) is backend


@pytest.mark.postgres
async def test_claim_if_free_after_waiting_on_a_commit_sees_its_checkpoints(
    make_postgres_backend: Callable[..., Any], postgres_schema: tuple[str, str]
) -> None:
    """A claim that waits for a holder's releasing commit claims the row as that commit
    left it, and must return the checkpoints that commit wrote too (its statement's
    snapshot predates them: they are read again)."""
    url, schema = postgres_schema
    backend = make_postgres_backend()
    await backend.open()
    other = await asyncpg.connect(url)
    try:
        ops = advance_queue(backend)
        await created(backend)
        table = f'"{schema}"'
        # A releasing commit in progress: it holds the row until it commits.
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            f"UPDATE {table}.sayiir_instances SET status = 'waiting' WHERE instance_id = 'i-1'"
        )
        await other.execute(
            f"INSERT INTO {table}.sayiir_checkpoints (instance_id, step_key, payload) "
            "VALUES ('i-1', 'a', '\\x32')"
        )
        claiming = asyncio.ensure_future(ops.claim_if_free("i-1", "w2", WANTED, TTL, NOW))
        await asyncio.sleep(0.3)
        assert not claiming.done()  # waits for the row
        await transaction.commit()

        claim = await claiming
        assert claim is not None
        assert claim.instance.record.status is Status.WAITING
        assert claim.instance.checkpoints == {"a": b"2"}
    finally:
        await other.close()
        await backend.close()


# -- what one step costs ------------------------------------------------------------------


@task("inc")
def inc(x: int) -> int:
    return x + 1


TEN = Flow("ten").then(inc).then(inc).then(inc).then(inc).then(inc)
TEN = TEN.then(inc).then(inc).then(inc).then(inc).then(inc)
TEN_STEPS = TEN.build()


async def run_through_messages(
    dispatcher: Dispatcher, messages: asyncio.Queue[StepTicket]
) -> list[StepRun]:
    runs = []
    while not messages.empty():
        sent = messages.get_nowait()
        ref = sent.ref
        runs.append(await dispatcher.run_step(ref, sent.workflow_id, sent.definition_hash))
    return runs


def collecting(messages: asyncio.Queue[StepTicket]) -> Callable[..., Awaitable[None]]:
    async def send(tickets: Sequence[StepTicket], token: int) -> None:
        for sent in tickets:
            messages.put_nowait(sent)

    return send


@pytest.mark.postgres
async def test_a_dispatched_step_costs_two_round_trips_on_postgres(
    postgres_schema: tuple[str, str],
) -> None:
    """Claim the step and its instance with its checkpoints, in one statement; commit
    the checkpoint, queue the next step and release, in one statement. (Before: three,
    and about seven before that.)"""
    from sayiir_core.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    backend = PostgresBackend(proxy.url(url), schema=schema, max_connections=1)
    await backend.open()
    try:
        messages: asyncio.Queue[StepTicket] = asyncio.Queue()
        dispatcher = Dispatcher(
            backend, [TEN_STEPS], collecting(messages), executor=LocalExecutor(), owner_id="w"
        )
        assert isinstance(advance_queue(backend), AdvanceQueue)
        await InstanceControl(backend).submit(TEN_STEPS, "warm-up", 0)
        await dispatcher.advance("warm-up")
        await run_through_messages(dispatcher, messages)  # prepares every statement
        await InstanceControl(backend).submit(TEN_STEPS, "counted", 0)
        await dispatcher.advance("counted")
        proxy.round_trips = 0

        runs = await run_through_messages(dispatcher, messages)

        assert runs == [StepRun.RAN] * 10
        assert proxy.round_trips == 2 * 10
        record = await backend.get_record("counted")
        assert record is not None
        assert record.status is Status.COMPLETED
    finally:
        await backend.close()
        await proxy.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_chain_continued_in_one_task_costs_one_round_trip_a_step(
    postgres_schema: tuple[str, str], broker: tuple[str, str]
) -> None:
    """The bridge's step task running a chain's next steps itself (``continue_for``):
    the commit that checkpoints a step claims the next one (``CommitAndClaimNext``), so
    after the first step's claim each step costs its commit alone, and no message is
    sent after the first (a message's delivery costs two: claim, then commit)."""
    from celery import Celery

    from sayiir_celery import SayiirCelery, StepMessage
    from sayiir_core.backends.postgres import PostgresBackend
    from sayiir_core.runtime.dispatch import dispatched_steps

    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    backend = PostgresBackend(proxy.url(url), schema=schema, max_connections=1)
    await backend.open()
    app = Celery("continued", broker=broker[0], set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": broker[1]}
    # A budget no loaded machine spends on ten steps: every step is continued.
    bridge = SayiirCelery(app, backend=backend, workflows=[TEN_STEPS], continue_for=60.0)
    dispatcher = bridge.dispatcher()

    async def first_message(instance_id: str) -> StepMessage:
        await InstanceControl(backend).submit(TEN_STEPS, instance_id, 0)
        await dispatcher.advance(instance_id)  # sends the first step's message
        record = await backend.get_record(instance_id)
        assert record is not None
        [(key, attempt)] = dispatched_steps(record).items()
        return StepMessage(instance_id, key, attempt, "ten", TEN_STEPS.definition_hash)

    try:
        warm_up: list[Any] = []
        await bridge._run_steps(await first_message("warm-up"), warm_up)  # prepares statements
        first = await first_message("counted")
        proxy.round_trips = 0
        outbox: list[Any] = []

        assert await bridge._run_steps(first, outbox) is StepRun.RAN

        assert outbox == []  # the last step completed the instance: nothing to send
        assert proxy.round_trips == 1 + 10
        record = await backend.get_record("counted")
        assert record is not None
        assert record.status is Status.COMPLETED
        assert record.output == b"10"
    finally:
        app.close()
        await backend.close()
        await proxy.stop()


@pytest.mark.postgres
async def test_a_too_large_output_fails_its_step_when_written_in_one_go(
    make_postgres_backend: Callable[..., Any],
) -> None:
    """The combined write is refused for size before anything is sent; the advance is
    done again one write at a time, where the runner fails the step."""
    backend = make_postgres_backend(max_payload_bytes=200)
    await backend.open()
    try:
        messages: asyncio.Queue[StepTicket] = asyncio.Queue()
        dispatcher = Dispatcher(
            backend, [BIG_FLOW], collecting(messages), executor=LocalExecutor(), owner_id="w"
        )
        await InstanceControl(backend).submit(BIG_FLOW, "big", 0)
        await dispatcher.advance("big")

        assert await run_through_messages(dispatcher, messages) == [StepRun.RAN]

        record = await backend.get_record("big")
        assert record is not None
        assert record.status is Status.FAILED
        assert record.error is not None
        assert "PayloadTooLargeError" in str(record.error)
    finally:
        await backend.close()


@task("big")
def big(x: int) -> str:
    return "x" * 1000


BIG_FLOW: Workflow = Flow("big").then(big).then(inc).build()


# -- the instance claim a step takes with it (runtime/dispatch/held.py) --------------------

GATES: list[asyncio.Event] = []  # the current test's gate (an event is bound to one loop)


@task("gated")
async def gated(x: int) -> int:
    await GATES[-1].wait()
    return x + 1


GATED: Workflow = Flow("gated").then(gated).then(inc).build()


async def owner_becomes(backend: Backend, instance_id: str, owner: str | None) -> None:
    async def poll() -> None:
        while True:
            record = await backend.get_record(instance_id)
            assert record is not None
            if record.owner == owner:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 10.0)


async def started_gated(
    backend: Backend, hold_claim: float, instance_id: str
) -> tuple[Dispatcher, asyncio.Queue[StepTicket], asyncio.Future[StepRun]]:
    """A dispatcher running the first step of ``GATED``, which waits on ``GATES[-1]``."""
    GATES.append(asyncio.Event())
    messages: asyncio.Queue[StepTicket] = asyncio.Queue()
    dispatcher = Dispatcher(
        backend,
        [GATED],
        collecting(messages),
        executor=LocalExecutor(),
        owner_id="w",
        hold_claim=hold_claim,
    )
    await InstanceControl(backend).submit(GATED, instance_id, 0)
    await dispatcher.advance(instance_id)
    sent = messages.get_nowait()
    running = asyncio.ensure_future(
        dispatcher.run_step(sent.ref, sent.workflow_id, sent.definition_hash)
    )
    return dispatcher, messages, running


@pytest.mark.postgres
async def test_a_slow_step_gives_its_instance_up_and_advances_it_after(
    make_postgres_backend: Callable[..., Any],
) -> None:
    backend = make_postgres_backend()
    await backend.open()
    try:
        dispatcher, messages, running = await started_gated(backend, 0.05, "slow")

        # Held with the step at first, given up while the step still runs.
        await owner_becomes(backend, "slow", None)
        assert not running.done()
        GATES[-1].set()

        assert await running == StepRun.RAN
        assert await run_through_messages(dispatcher, messages) == [StepRun.RAN]
        record = await backend.get_record("slow")
        assert record is not None
        assert (record.status, record.output) == (Status.COMPLETED, b"2")
    finally:
        await backend.close()


@pytest.mark.postgres
async def test_a_cancel_asked_while_a_step_holds_its_instance_is_honoured_after_it(
    make_postgres_backend: Callable[..., Any],
) -> None:
    backend = make_postgres_backend()
    await backend.open()
    try:
        _, messages, running = await started_gated(backend, 60.0, "held")
        await owner_becomes(backend, "held", "w")

        await InstanceControl(backend).cancel("held", reason="stop")
        GATES[-1].set()

        assert await running == StepRun.RAN
        record = await backend.get_record("held")
        assert record is not None
        assert (record.status, record.owner) == (Status.CANCELLED, None)
        # The advance after the step queued the next one, read the cancel back with its
        # write and sent nothing; a copy of its message would claim nothing.
        assert messages.empty()
        assert await backend.claim_step(StepRef("held", "inc", 1), "x", TTL, NOW) is None
    finally:
        await backend.close()


@pytest.mark.postgres
async def test_a_pause_asked_while_a_step_holds_its_instance_sends_nothing_until_unpause(
    make_postgres_backend: Callable[..., Any],
) -> None:
    """The advance after the step queues the next one, reads the pause back with its
    write and does not send it; the unpause's advance does."""
    backend = make_postgres_backend()
    await backend.open()
    try:
        dispatcher, messages, running = await started_gated(backend, 60.0, "paused")
        await owner_becomes(backend, "paused", "w")

        await InstanceControl(backend).pause("paused")
        GATES[-1].set()

        assert await running == StepRun.RAN
        record = await backend.get_record("paused")
        assert record is not None
        assert (record.status, record.owner) == (Status.PAUSED, None)
        assert messages.empty()

        await InstanceControl(backend).unpause("paused")
        await dispatcher.advance("paused", resend=True)
        assert await run_through_messages(dispatcher, messages) == [StepRun.RAN]
        record = await backend.get_record("paused")
        assert record is not None
        assert (record.status, record.output) == (Status.COMPLETED, b"2")
    finally:
        await backend.close()


@pytest.mark.postgres
async def test_a_step_whose_lease_is_taken_over_while_it_runs_is_stopped_and_lost(
    make_postgres_backend: Callable[..., Any],
) -> None:
    """The lease is renewed while the step runs; once a renewal is refused (another
    worker took the step over) the step is stopped and its outcome is not written."""
    backend = make_postgres_backend()
    await backend.open()
    try:
        GATES.append(asyncio.Event())
        messages: asyncio.Queue[StepTicket] = asyncio.Queue()
        dispatcher = Dispatcher(
            backend,
            [GATED],
            collecting(messages),
            executor=LocalExecutor(),
            owner_id="w",
            step_lease=0.3,  # renewed every 0.1 s
        )
        await InstanceControl(backend).submit(GATED, "taken", 0)
        await dispatcher.advance("taken")
        sent = messages.get_nowait()
        running = asyncio.ensure_future(
            dispatcher.run_step(sent.ref, sent.workflow_id, sent.definition_hash)
        )
        await asyncio.sleep(0.35)  # renewed at least twice meanwhile: still its own
        assert not running.done()
        later = time.time() + 3_600.0  # its lease looks expired to this claim
        other = await backend.claim_step(sent.ref, "other", TTL, later)
        assert other is not None

        assert await asyncio.wait_for(running, 10.0) == StepRun.LOST
        assert not GATES[-1].is_set()  # stopped while it waited, not finished
        assert await backend.step_results([sent.ref]) == {}
    finally:
        await backend.close()
