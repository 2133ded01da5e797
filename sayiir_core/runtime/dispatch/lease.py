"""``StepLease``: renews a running step's lease; stops the step once the lease is lost.

Most steps end long before the first renewal is due. So nothing runs for them but a
timer: the renewing task starts only when that timer fires, and a step that ends
before it costs no task, no sleep and no cancellation to process (each one more turn
of the event loop per step).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sayiir_core.backends.step_queue import ClaimedStep, StepQueue


class StepLease:
    """Renew ``claimed``'s lease for ``lease`` seconds every ``every`` seconds until
    ``stop()``. Made in the task that runs the step: if a renewal is refused (taken
    over, withdrawn) while the step runs (until ``step_over()``), that task is cancelled
    and ``stopped_the_step`` says so."""

    __slots__ = (
        "_claimed",
        "_clock",
        "_every",
        "_lease",
        "_queue",
        "_renewing",
        "_step_task",
        "_timer",
        "stopped_the_step",
    )

    def __init__(
        self,
        queue: StepQueue,
        claimed: ClaimedStep,
        *,
        lease: float,
        every: float,
        clock: Callable[[], float],
    ) -> None:
        self._queue = queue
        self._claimed = claimed
        self._lease = lease
        self._every = every
        self._clock = clock
        self._step_task: asyncio.Task[object] | None = asyncio.current_task()
        self.stopped_the_step = False
        self._renewing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            every, self._start
        )

    def step_over(self) -> None:
        """The step ended: a refused renewal no longer cancels anything (the outcome's
        fenced write finds the lease gone itself)."""
        self._step_task = None

    def uncancel(self) -> int:
        """Undo the cancellation this lease asked for; the cancellations still pending."""
        task = asyncio.current_task()
        assert task is not None
        return task.uncancel()

    def stop(self) -> None:
        self._step_task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewing is not None:
            self._renewing.cancel()

    def _start(self) -> None:
        self._timer = None
        self._renewing = asyncio.ensure_future(self._keep())

    async def _keep(self) -> None:
        ref, token = self._claimed.ticket.ref, self._claimed.token
        while True:
            renewed: bool | None = None
            with contextlib.suppress(Exception):  # storage unreachable: the next beat retries
                renewed = await self._queue.renew_step(ref, token, self._lease, self._clock())
            if renewed is False:
                step = self._step_task
                if step is not None:
                    self.stopped_the_step = True
                    step.cancel()
                return
            await asyncio.sleep(self._every)
