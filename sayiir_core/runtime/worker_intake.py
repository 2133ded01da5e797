"""``WorkerIntake``: a running ``Worker`` takes instances submitted on its own event loop.

A client in the same event loop as a worker (the FastAPI lifespan's, or any app that
runs ``Worker.run`` beside its client) need not leave a new instance for the worker to
find: while the worker has a free slot, the client stores the instance already claimed
by the worker (owner, lease, claim token, status ``running``), as
``run_durable_workflow`` does, and hands the claim over; the worker starts it at once.
That saves the NOTIFY or poll hop, the claim statement and the ``pending -> running``
write: on PostgreSQL two of the six commits of a three-step instance.

Correct across processes as any claim is: nobody else claims the instance while the
lease runs; if this process dies, the lease expires and another worker takes it over.
Instances that find no free slot are stored ``pending`` as usual, for any worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType

from sayiir_core.backends.base import (
    Backend,
    Claim,
    ConflictPolicy,
    InstanceRecord,
    LoadedInstance,
    NewInstance,
)
from sayiir_core.workflow.workflow import Workflow


class WorkerIntake:
    """The door of one running worker; open between its start and its stop.

    ``start(claim)`` runs a handed-over claim as one of the worker's instances;
    ``free_slots()`` is how many instances the worker could run beside its own now;
    ``settled()`` tells the worker's loop that a reservation ended (started or not).
    The loop brackets each ``claim_next`` with ``claim_starts(limit)`` and
    ``claim_ends()``: until it returns, the slots it asked for are not free.
    """

    def __init__(
        self,
        owner: str,
        lease_ttl: float,
        definitions: Mapping[str, str],
        *,
        start: Callable[[Claim], None],
        free_slots: Callable[[], int],
        settled: Callable[[], None],
    ) -> None:
        self.owner = owner
        self.lease_ttl = lease_ttl
        self._definitions = definitions
        self._start = start
        self._free_slots = free_slots
        self._settled = settled
        self._loop = asyncio.get_running_loop()
        self._open = True
        # Slots promised to submissions whose create has not returned yet.
        self.reserved = 0
        self._claiming = 0  # the slots a claim in flight asked for
        self._claim_ended = asyncio.Event()

    def close(self) -> None:
        """Take no more instances (the worker is stopping)."""
        self._open = False
        self._claim_ended.set()  # wake reservations waiting for a claim

    def claim_starts(self, limit: int) -> None:
        self._claiming = limit
        self._claim_ended.clear()

    def claim_ends(self) -> None:
        self._claiming = 0
        self._claim_ended.set()

    async def reserve(self, workflow: Workflow) -> Reservation | None:
        """A slot for a new instance of ``workflow``, or ``None`` (submit it as usual).

        ``None`` when the worker is stopping, has no free slot, serves another
        definition of the workflow, or runs on another event loop (its claim could not
        be run from here). Slots held by a claim in flight are waited for (a statement:
        milliseconds), so that an idle worker's poll does not turn the submit away.
        """
        if self._definitions.get(workflow.workflow_id) != workflow.definition_hash:
            return None
        if asyncio.get_running_loop() is not self._loop:
            return None
        while self._open:
            if self.reserved + self._claiming < self._free_slots():
                self.reserved += 1
                return Reservation(self)
            if not self._claiming or self.reserved >= self._free_slots():
                return None  # full without the claim's slots too
            await self._claim_ended.wait()
        return None

    def _end(self, claim: Claim | None) -> None:
        self.reserved -= 1
        try:
            if claim is not None:
                self._start(claim)
        finally:
            self._settled()


class Reservation:
    """One promised slot: ``create`` stores the instance claimed by the worker and hands
    it over; leaving the ``with`` block without a hand-over gives the slot back."""

    def __init__(self, intake: WorkerIntake) -> None:
        self._intake = intake
        self._ended = False

    @property
    def owner(self) -> str:
        return self._intake.owner

    @property
    def lease_ttl(self) -> float:
        return self._intake.lease_ttl

    async def create(
        self, backend: Backend, new: NewInstance, policy: ConflictPolicy
    ) -> tuple[InstanceRecord, bool]:
        """``backend.create(new, policy)``; the worker runs the instance if it was created.

        ``new`` is claimed by ``owner`` with ``lease_ttl``. The create and the
        hand-over run in their own task: a caller cancelled meanwhile (a client that
        hung up) must not strand an instance claimed by a worker that never heard of
        it until its lease ran out.
        """
        if self._ended:
            raise RuntimeError("this reservation has ended")
        self._ended = True
        creating = asyncio.ensure_future(backend.create(new, policy))
        _in_flight.add(creating)  # the loop keeps only a weak reference to a task
        creating.add_done_callback(_in_flight.discard)
        creating.add_done_callback(self._hand_over)
        return await asyncio.shield(creating)

    def _hand_over(self, creating: asyncio.Future[tuple[InstanceRecord, bool]]) -> None:
        claim = None
        if not creating.cancelled() and creating.exception() is None:
            record, created = creating.result()
            # A replaced instance (terminate_existing) is claimed the same way.
            if created and record.owner == self.owner:
                claim = Claim(LoadedInstance(record, {}), record.claim_token)
        # A loop turn later: the submitter, woken meanwhile by the shield, then gets to
        # answer before the instance's first step takes the loop.
        creating.get_loop().call_soon(self._intake._end, claim)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._ended:
            self._ended = True
            self._intake._end(None)


# Creates whose caller may have stopped waiting (see ``Reservation.create``).
_in_flight: set[asyncio.Future[tuple[InstanceRecord, bool]]] = set()
