"""The sweeper: what no message will wake, moved on by one worker of the fleet at a time.

Each sweep advances, through ``Dispatcher.sweep``, the instances that are runnable with
nobody to wake them: submitted while the broker was down, a durable delay or retry
back-off that came due, a signal or an unpause, an advance that died, and instances
whose outstanding steps passed their re-dispatch time (their messages are sent again:
a lost message runs, a copy of a step still running is dropped). In the steady state
it finds nothing, so it adds no work per step.

One at a time across the fleet: the sweeper holds a database lease (``SweeperLease``)
while it sweeps; the other processes try to take it over every half lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sayiir_core.backends.base import Backend, ConflictPolicy, NewInstance
from sayiir_core.errors import InstanceAlreadyExistsError
from sayiir_core.runtime.dispatch import Dispatcher
from sayiir_core.status import Status

logger = logging.getLogger("sayiir.celery.sweeper")

LEASE_INSTANCE = "sayiir-celery-sweeper"
LEASE_WORKFLOW = "sayiir_celery.sweeper"
LEASE_DEFINITION = "lease-1"


class SweeperLease:
    """One holder at a time across processes, on the backend's instance claims.

    The lease is the claim on a reserved instance (``sayiir-celery-sweeper`` of workflow
    ``sayiir_celery.sweeper``) that no worker runs: ``claim_next`` takes it only when
    it is free or its lease expired, ``renew`` keeps it. The Backend protocol has no
    named lease of its own; this one needs nothing beyond the claims every backend has.
    """

    def __init__(self, backend: Backend, owner: str, ttl: float) -> None:
        self._backend = backend
        self._owner = owner
        self.ttl = ttl
        self._token: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._token is not None

    async def hold(self) -> bool:
        """Keep or take the lease for ``ttl`` seconds from now; False if another has it."""
        now = time.time()
        if self._token is not None:
            if await self._backend.renew(LEASE_INSTANCE, self._token, self.ttl, now):
                return True
            self._token = None
        await self._create()
        claims = await self._backend.claim_next(
            self._owner, {LEASE_WORKFLOW: LEASE_DEFINITION}, self.ttl, now, 1
        )
        if claims:
            self._token = claims[0].token
            logger.info("sweeper lease taken by %s", self._owner)
        return self._token is not None

    async def _create(self) -> None:
        if self._created:
            return
        new = NewInstance(
            instance_id=LEASE_INSTANCE,
            workflow_id=LEASE_WORKFLOW,
            definition_hash=LEASE_DEFINITION,
            input=b"null",
            status=Status.PENDING,
            now=time.time(),
        )
        with contextlib.suppress(InstanceAlreadyExistsError):
            await self._backend.create(new, ConflictPolicy.USE_EXISTING)
        self._created = True


class Sweeper:
    """Sweeps every ``interval`` seconds while it holds the lease."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        interval: float,
        batch: int = 50,
        lease_ttl: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"sweep interval must be positive, got {interval!r}")
        self.dispatcher = dispatcher
        self.interval = interval
        self.batch = batch
        ttl = lease_ttl if lease_ttl is not None else max(10.0, 5 * interval)
        self.lease = SweeperLease(dispatcher.backend, dispatcher.owner_id, ttl)

    async def sweep_once(self) -> int:
        """Sweep now if this process holds (or can take) the lease; returns instances moved."""
        await self.dispatcher.open()
        if not await self.lease.hold():
            return 0
        moved = 0
        while True:
            claimed = await self.dispatcher.sweep(self.batch)
            moved += claimed
            if claimed < self.batch:
                return moved

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until ``stop`` is set; errors are logged and retried at the next turn."""
        while not stop.is_set():
            wait = self.interval
            try:
                await self.sweep_once()
                if not self.lease.held:
                    wait = max(self.interval, self.lease.ttl / 2)
            except Exception:
                logger.warning("sweep failed; retrying in %.1f s", self.interval, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
