"""``LeaseHeartbeat``: renews a running instance's lease every ``lease_ttl / 3``.

A timer on the event loop, not a task: most runs end well before the first beat, and a
task sleeping beside each run cost its creation, a turn of the loop to start it and
another to cancel it. The renewal itself runs as a task, only when a beat is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sayiir_core.backends.base import Backend
from sayiir_core.telemetry.logs import InstanceLogger

logger = logging.getLogger("sayiir.engine")


class LeaseHeartbeat:
    """Keeps claim ``token`` on ``instance_id`` alive while ``run`` runs.

    When a renewal finds the claim taken over, ``on_lost`` is called (the runner marks
    the lease lost and cancels ``run``) and the beats stop. A renewal that fails (the
    database unreachable for now) is retried at the next beat: the lease still has two
    beats to run before anyone may take it over.
    """

    def __init__(
        self,
        backend: Backend,
        instance_id: str,
        token: int,
        lease_ttl: float,
        clock: Callable[[], float],
        on_lost: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._instance_id = instance_id
        self._token = token
        self._lease_ttl = lease_ttl
        self._clock = clock
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._timer = self._loop.call_later(self._lease_ttl / 3, self._beat)

    def stop(self) -> None:
        """No more beats; a renewal in flight is cancelled (the lease is left as is)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    def _beat(self) -> None:
        self._timer = None
        if not self._stopped:
            self._renewal = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            renewed = await self._backend.renew(
                self._instance_id, self._token, self._lease_ttl, self._clock()
            )
        except Exception:
            InstanceLogger(logger, self._instance_id).warning(
                "instance %r: lease renewal failed; retrying", self._instance_id
            )
            renewed = True
        self._renewal = None
        if self._stopped:
            return
        if not renewed:
            self._stopped = True
            self._on_lost()
            return
        self.start()
