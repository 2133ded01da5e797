"""What every part of the contract shares: the two backend fixtures and record builders.

The suite drives a backend directly, as the runtime does, with fixed times (``NOW``) so
lease and wake-up arithmetic is exact and no test depends on the wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_asyncio

from sayiir_core import Backend, ConflictPolicy, HistoryEvent, Status
from sayiir_core.backends import NewInstance, StepWrite

BackendFactory = Callable[[], Backend]
"""What the ``make_backend`` fixture returns: each call gives a new, unopened backend
object on the *same* storage (for one test), as a second process would open it. A
backend whose storage is the object itself (``InMemoryBackend``) returns that one object
every time."""

NOW = 1_000.0
HASH = "hash-1"
TTL = 30.0


class BackendFixtures:
    """``backend`` and ``other_backend``, built from the user's ``make_backend`` fixture.

    Every contract class derives from this one, so the suite needs exactly one fixture
    from its user. The backend is opened and closed through the protocol's own
    ``open``/``close``: the suite created it, so the suite closes it.
    """

    # The tests are coroutines: the mark lets them run in pytest-asyncio's strict mode
    # too, not only where the user's project sets ``asyncio_mode = "auto"``.
    pytestmark = [pytest.mark.asyncio]

    @pytest_asyncio.fixture(loop_scope="function")
    async def backend(self, make_backend: BackendFactory) -> AsyncIterator[Backend]:
        """An opened backend on this test's fresh storage, closed after the test."""
        backend = make_backend()
        await backend.open()
        yield backend
        await backend.close()

    @pytest_asyncio.fixture(loop_scope="function")
    async def other_backend(
        self, make_backend: BackendFactory, backend: Backend
    ) -> AsyncIterator[Backend]:
        """A second backend object on ``backend``'s storage (a new connection, as another
        process would have), or ``backend`` itself when the factory returns one object."""
        other = make_backend()
        if other is backend:
            yield backend
            return
        await other.open()
        yield other
        await other.close()


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
    """Create ``instance_id`` and claim it (the lease ends at ``NOW + TTL``); returns the
    claim token."""
    await create(backend, instance_id)
    return (await backend.claim(instance_id, owner, TTL, NOW)).token


async def kinds(backend: Backend, instance_id: str = "i-1") -> list[str]:
    return [event.kind for event in await backend.history(instance_id)]
