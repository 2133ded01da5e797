"""``HeldClaim``: the instance claim taken together with a step, held while it runs.

``Dispatcher.run_step`` claims the step and, when the step is its instance's only one
out (a chain), the instance too, in one round trip (``claim_step_and_instance``). The
advance after the step then needs no claim of its own: a step costs two round trips
on PostgreSQL instead of three.

Nobody else can advance the instance while the claim is held: a cancel or pause asked
meanwhile is honoured by the advance after the step. So the claim is held for a short
while only: a step still running after ``hold`` seconds gives it up (one more write,
the instance left as it was) and its outcome is advanced like any other, under a
claim taken afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sayiir_core.backends.base import Backend, Claim, InstanceRecord, StepWrite
from sayiir_core.runtime.durable_runner import rewrite

# How long a step may keep its instance claimed before giving it up (at most).
HOLD_WHILE_RUNNING = 1.0


class HeldClaim:
    """An instance claim taken with a step: handed to the advance after the step if
    the step ends within ``hold`` seconds, else given up.

    Until ``hold`` is over only a timer runs (no task): most steps end well before it.
    """

    def __init__(
        self, backend: Backend, claim: Claim | None, hold: float, clock: Callable[[], float]
    ) -> None:
        self._backend = backend
        self._claim = claim
        self._clock = clock
        self._letting_go: asyncio.Task[None] | None = None  # giving it up (hold over)
        self._timer: asyncio.TimerHandle | None = None
        if claim is not None:
            self._timer = asyncio.get_running_loop().call_later(hold, self._hold_over)

    async def take(self) -> Claim | None:
        """The claim for the advance after the step, or ``None`` if it was given up."""
        if self._timer is not None:  # still held: nothing was written
            self._timer.cancel()
            self._timer = None
            claim, self._claim = self._claim, None
            return claim
        letting_go, self._letting_go = self._letting_go, None
        if letting_go is not None:
            await letting_go  # giving it up right now: let that write finish (never raises)
        return None

    async def give_back(self) -> None:
        """Give the claim up now (the step's outcome is not advanced here)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            await self._let_go()
            return
        letting_go, self._letting_go = self._letting_go, None
        if letting_go is not None:
            await letting_go

    def _hold_over(self) -> None:
        self._timer = None
        self._letting_go = asyncio.ensure_future(self._let_go())

    async def _let_go(self) -> None:
        claim, self._claim = self._claim, None
        assert claim is not None
        record = claim.instance.record
        # Taken over or unreachable: the claim ends with its lease anyway.
        with contextlib.suppress(Exception):
            await self._backend.commit(
                record.instance_id, claim.token, release_write(None, record, self._clock())
            )


def release_write(last: StepWrite | None, record: InstanceRecord, now: float) -> StepWrite:
    """Give the claim up, leaving the instance as its last write (or the claim) left it."""
    return rewrite(last if last is not None else record, now, release=True)
