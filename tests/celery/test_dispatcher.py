"""The dispatch seam without Celery: ``Dispatcher`` over a real ``InMemoryBackend``.

The "broker" is an asyncio queue and the "workers" are tasks that call ``run_step`` for
each message, each with a dispatcher of its own (its own owner id), as Celery worker
processes would. These pin the protocol: the join fires once, a duplicate message runs
nothing, cancel drops queued messages, pause holds the next steps, a lost message is
sent again by the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sayiir_core import Flow, InMemoryBackend, task
from sayiir_core.backends.base import StepWrite
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.runtime import LocalExecutor
from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.dispatch import Dispatcher, StepRun, dispatched_steps
from sayiir_core.workflow.workflow import Workflow

RAN: Counter[str] = Counter()


@task("start")
def start(x: int) -> int:
    RAN["start"] += 1
    return x + 1


@task("left")
async def left(x: int) -> int:
    RAN["left"] += 1
    await asyncio.sleep(0.01)
    return x * 10


@task("right")
def right(x: int) -> int:
    RAN["right"] += 1
    return x * 100


@task("join")
def join(parts: dict[str, int]) -> int:
    RAN["join"] += 1
    return parts["left"] + parts["right"]


@task("gate")
async def gate(x: int) -> int:
    RAN["gate"] += 1
    await GATE.wait()
    return x


@task("after")
def after(x: int) -> int:
    RAN["after"] += 1
    return x + 1


GATE = asyncio.Event()
FORK = Flow("fork").then(start).fork().branch(left).branch(right).join(join).build()
GATED = Flow("gated").then(gate).then(after).build()


@dataclass
class Fleet:
    """Workers consuming one in-process queue of ``(ref, workflow, hash)`` messages."""

    backend: InMemoryBackend
    workflows: list[Workflow]
    duplicate: bool = False
    drop_next: int = 0
    queue: asyncio.Queue[StepRef] = field(default_factory=asyncio.Queue)
    results: list[StepRun] = field(default_factory=list)
    sent: int = 0

    def dispatcher(self, name: str) -> Dispatcher:
        return Dispatcher(
            self.backend,
            self.workflows,
            self.send,
            executor=LocalExecutor(),
            owner_id=name,
            step_lease=5.0,
            redispatch_after=0.3,
        )

    async def send(self, tickets: Sequence[StepTicket], token: int) -> None:
        for ticket in tickets:
            self.sent += 1
            if self.drop_next:
                self.drop_next -= 1  # a message the broker lost
                continue
            for _ in range(2 if self.duplicate else 1):
                self.queue.put_nowait(ticket.ref)

    async def worker(self, name: str) -> None:
        dispatcher = self.dispatcher(name)
        by_id = {wf.workflow_id: wf for wf in self.workflows}
        while True:
            ref = await self.queue.get()
            record = await self.backend.get_record(ref.instance_id)
            assert record is not None
            workflow = by_id[record.workflow_id]
            result = await dispatcher.run_step(ref, workflow.workflow_id, workflow.definition_hash)
            self.results.append(result)


@contextlib.asynccontextmanager
async def running(fleet: Fleet, workers: int = 2) -> AsyncIterator[Dispatcher]:
    tasks = [asyncio.create_task(fleet.worker(f"w{i}")) for i in range(workers)]
    try:
        yield fleet.dispatcher("client")
    finally:
        for worker in tasks:
            worker.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def submit(backend: InMemoryBackend, dispatcher: Dispatcher, wf: Workflow, iid: str) -> None:
    await InstanceControl(backend).submit(wf, iid, 1)
    await dispatcher.advance(iid)


async def finished(backend: InMemoryBackend, iid: str, within: float = 5.0) -> str:
    deadline = time.monotonic() + within
    status = "?"
    while time.monotonic() < deadline:
        record = await backend.get_record(iid)
        assert record is not None
        status = record.status.value
        if record.status.is_terminal:
            return status
        await asyncio.sleep(0.005)
    raise AssertionError(f"{iid} did not finish; status {status}")


async def completions(backend: InMemoryBackend, iid: str) -> Counter[str]:
    return Counter(
        e.step_key for e in await backend.history(iid) if e.kind == "task_completed" and e.step_key
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()
    GATE.clear()


async def test_fork_join_runs_each_step_once_and_joins_once() -> None:
    backend = InMemoryBackend()
    fleet = Fleet(backend, [FORK])
    async with running(fleet) as client:
        for i in range(10):
            await submit(backend, client, FORK, f"f{i}")
        for i in range(10):
            assert await finished(backend, f"f{i}") == "completed"
            record = await backend.get_record(f"f{i}")
            assert record is not None
            assert record.output == b"220"
            assert await completions(backend, f"f{i}") == Counter(
                {"start": 1, "left": 1, "right": 1, "join": 1}
            )
    assert Counter({"start": 10, "left": 10, "right": 10, "join": 10}) == RAN


async def test_every_message_delivered_twice_runs_each_step_once() -> None:
    backend = InMemoryBackend()
    fleet = Fleet(backend, [FORK], duplicate=True)
    async with running(fleet, workers=3) as client:
        for i in range(5):
            await submit(backend, client, FORK, f"d{i}")
        for i in range(5):
            assert await finished(backend, f"d{i}") == "completed"
    assert Counter({"start": 5, "left": 5, "right": 5, "join": 5}) == RAN
    assert StepRun.DROPPED in fleet.results


async def test_a_lost_message_is_sent_again_by_the_sweep() -> None:
    backend = InMemoryBackend()
    fleet = Fleet(backend, [FORK], drop_next=1)  # the first step's message is lost
    async with running(fleet) as client:
        await submit(backend, client, FORK, "lost")
        record = await backend.get_record("lost")
        assert record is not None
        assert dispatched_steps(record) == {"start": 1}
        assert await client.sweep() == 0  # not due yet: nothing to do
        await asyncio.sleep(0.35)
        assert await client.sweep() == 1
        assert await finished(backend, "lost") == "completed"
    assert RAN["start"] == 1


async def test_cancel_drops_the_queued_message() -> None:
    backend = InMemoryBackend()
    fleet = Fleet(backend, [FORK])
    client = fleet.dispatcher("client")
    await submit(backend, client, FORK, "c")  # queued; no worker runs yet
    await InstanceControl(backend).cancel("c")
    async with running(fleet):
        await asyncio.sleep(0.1)
    assert fleet.results == [StepRun.DROPPED]
    assert Counter() == RAN


async def test_pause_holds_the_next_step_until_unpause() -> None:
    backend = InMemoryBackend()
    fleet = Fleet(backend, [GATED])
    control = InstanceControl(backend)
    async with running(fleet) as client:
        await submit(backend, client, GATED, "p")
        while RAN["gate"] == 0:
            await asyncio.sleep(0.005)
        await control.pause("p")
        GATE.set()
        await asyncio.sleep(0.1)
        record = await backend.get_record("p")
        assert record is not None
        assert record.status.value == "paused"
        assert RAN["after"] == 0
        await control.unpause("p")
        await client.advance("p")
        assert await finished(backend, "p") == "completed"
        assert await completions(backend, "p") == Counter({"gate": 1, "after": 1})


async def test_a_pause_asked_for_during_an_advance_is_honoured_by_it() -> None:
    """The advance's one write reads back a pause asked for while it held the claim, and
    the dispatcher advances again at once to settle it (no sweeper needed)."""
    backend = InMemoryBackend()
    fleet = Fleet(backend, [GATED])
    control = InstanceControl(backend)
    client = fleet.dispatcher("client")
    await InstanceControl(backend).submit(GATED, "mid", 1)
    original = backend.commit_and_publish
    asked = False

    async def commit_then_pause(
        instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> Any:
        nonlocal asked
        if not asked:
            asked = True
            await control.pause(instance_id)  # arrives while the advance holds the claim
        return await original(instance_id, token, write, tickets)

    backend.commit_and_publish = commit_then_pause  # type: ignore[method-assign]
    await client.advance("mid")
    record = await backend.get_record("mid")
    assert record is not None
    assert record.status.value == "paused"
    assert record.owner is None
