"""``FinishWatchContract``: ``Backend.watch_finish`` wakes the watchers of an instance.

The finishing write goes through ``other_backend``, a second backend object on the same
storage (a new connection, as another process would have; a backend whose factory
returns one object, like ``InMemoryBackend``, uses that one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sayiir_core import Backend, Status
from sayiir_core.backends import ControlRequest, FinishWatch, StepWrite
from sayiir_core.testing._support import NOW, TTL, BackendFixtures, claimed

# A watch that should fire gets this long; the test fails if it has to wait it out.
FIRES_WITHIN = 10.0


async def quiet(*watches: FinishWatch) -> None:
    """Let the watches settle: a backend may fire a new watch once, e.g. when its
    PostgreSQL LISTEN connection comes up, since finishes may have gone unheard."""
    for watch in watches:
        while await watch.wait(0.3):
            pass


def write(status: Status, **extra: Any) -> StepWrite:
    return StepWrite(status=status, control={}, now=NOW + 1, **extra)


class FinishWatchContract(BackendFixtures):
    """A finishing commit or an immediate cancel fires every watch of that instance and
    only those; commits that do not finish fire nothing; watches can be entered again."""

    @pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
    async def test_a_finishing_commit_fires_the_watches_of_that_instance_only(
        self, backend: Backend, other_backend: Backend, status: Status
    ) -> None:
        token = await claimed(other_backend, "i-1")
        await claimed(other_backend, "i-2")

        async with (
            backend.watch_finish("i-1") as first,
            backend.watch_finish("i-1") as second,
            backend.watch_finish("i-2") as other,
        ):
            await quiet(first, second, other)
            await other_backend.commit("i-1", token, write(status, output=b"2", release=True))

            assert await asyncio.wait_for(first.wait(FIRES_WITHIN), FIRES_WITHIN / 2)
            assert await asyncio.wait_for(second.wait(FIRES_WITHIN), FIRES_WITHIN / 2)
            assert not await other.wait(0.2)

    async def test_commits_that_do_not_finish_fire_nothing(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        token = await claimed(other_backend, "i-1")

        async with backend.watch_finish("i-1") as watch:
            await quiet(watch)
            await other_backend.commit(
                "i-1", token, write(Status.RUNNING, checkpoints=[("a", b"1")])
            )
            await other_backend.commit(
                "i-1", token, write(Status.WAITING, wake_at=NOW + 60, release=True)
            )
            await other_backend.request_control("i-1", ControlRequest.PAUSE, None, None, NOW + 2)

            assert not await watch.wait(0.3)

    async def test_a_cancel_that_applies_at_once_fires_the_watch(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        await claimed(other_backend, "i-1")  # the lease runs out at NOW + TTL: nobody holds it then

        async with backend.watch_finish("i-1") as watch:
            await quiet(watch)
            record = await other_backend.request_control(
                "i-1", ControlRequest.CANCEL, "no longer needed", "ops", NOW + TTL + 1
            )
            assert record.status is Status.CANCELLED

            assert await asyncio.wait_for(watch.wait(FIRES_WITHIN), FIRES_WITHIN / 2)

    async def test_a_finish_before_the_watch_does_not_fire_it(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        token = await claimed(other_backend, "i-1")
        await other_backend.commit("i-1", token, write(Status.COMPLETED, output=b"2", release=True))

        async with backend.watch_finish("i-1") as watch:
            await quiet(watch)
            # The waiter's read finds it finished: the watch only covers what comes after.
            assert not await watch.wait(0.2)
            assert watch.poll_interval > 0

    async def test_watches_can_be_entered_again_after_they_end(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        first_token = await claimed(other_backend, "i-1")
        second_token = await claimed(other_backend, "i-2")

        for instance_id, token in (("i-1", first_token), ("i-2", second_token)):
            async with backend.watch_finish(instance_id) as watch:
                await quiet(watch)
                await other_backend.commit(
                    instance_id, token, write(Status.COMPLETED, release=True)
                )
                assert await asyncio.wait_for(watch.wait(FIRES_WITHIN), FIRES_WITHIN / 2)
