"""The shared step queue: how one instance's parallel steps run on several workers.

An instance is advanced by the one worker holding its claim (the *orchestrator*): only
it feeds the machine and writes checkpoints, so a join fires exactly once. When the
instance has more than one step ready at a time (fork branches, ``map`` items), the
orchestrator runs one itself and *publishes* the others here; any worker with the same
workflow definition claims them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), runs them
under a lease of their own and stores the outcome. The orchestrator reads the outcomes
back and checkpoints them; the commit that checkpoints a step deletes its queue rows in
the same transaction, and a finished instance's rows go with its final commit (or
with the cancel that finishes an instance nobody runs).

Fencing: a step claim has a token, bumped on every claim. ``finish_step`` only writes
under the current token, so a worker whose step lease ran out (frozen, cut off) cannot
overwrite the outcome of the worker that took the step over. A crash of the
orchestrator loses nothing either: the next owner of the instance asks for the same
``(step_key, attempt)`` again, which finds the queued, running or finished row.

A dispatcher that already knows which step it wants (a Celery task whose message
names the instance, step and attempt) claims that one step with ``claim_step``; the
claim token it gets fences its ``renew_step`` and ``finish_step`` like any other.

A backend offers the queue by implementing ``StepQueue`` next to ``Backend``; workers
on a backend without it run every step of an instance themselves. ``AdvanceQueue`` is
optional on top: the two writes of a dispatched advance, each atomic (memory, Django,
and PostgreSQL in one statement each); ``advance_queue`` builds them from the other
methods for any other backend. ``StepAndInstanceClaim`` is optional too: a step claim
that also takes the instance when that blocks nobody, so that the advance after the
step needs no claim of its own (``claim_step_and_instance`` falls back to
``claim_step`` alone). ``CommitAndClaimNext`` is optional as well: an advance's commit
that also claims, for its own owner, the one step it queues (a chain's next step) and
keeps the instance, so that a process running a chain's steps one after the other
pays one write per step (the dispatcher uses ``commit_and_publish`` without it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sayiir_core.backends._free import is_free_for
from sayiir_core.backends.base import (
    Backend,
    Claim,
    ControlRequest,
    LoadedInstance,
    StepWrite,
)
from sayiir_core.backends.rules import committed_record
from sayiir_core.machine.state import ErrorInfo


@dataclass(frozen=True, slots=True)
class StepRef:
    """Names one attempt of one step of one instance."""

    instance_id: str
    step_key: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StepTicket:
    """A step published for any worker: what it needs to run it."""

    ref: StepRef
    workflow_id: str
    definition_hash: str
    input: bytes
    priority: int
    now: float


@dataclass(frozen=True, slots=True)
class ClaimedStep:
    """Proof of a step claim: pass ``token`` to ``renew_step`` and ``finish_step``.

    ``taken_over``: the step had been claimed before and that lease ran out without an
    outcome (its worker died, hung or was cut off; possibly this same owner), so this
    claim took it over; ``False`` for a step claimed for the first time. It feeds the
    ``sayiir.leases.taken_over`` metric. A claim found again after a lost reply may say
    ``False`` either way. Defaults to ``False`` so that backends written before it still
    build claims (their takeovers go uncounted).
    """

    ticket: StepTicket
    token: int
    taken_over: bool = False


@dataclass(frozen=True, slots=True)
class StepResult:
    """How an attempt went, as the worker that ran it stored it.

    ``output`` is the codec-encoded return value when ``error`` is ``None``.
    """

    worker_id: str
    started_at: float
    finished_at: float
    output: bytes | None = None
    error: ErrorInfo | None = None
    retryable: bool = False
    traceback: str = ""


@runtime_checkable
class StepQueue(Protocol):
    """Storage for published steps; implemented by backends that share steps."""

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        """Queue steps for any worker; a ticket already queued (same ref) is left as is."""
        ...

    async def claim_steps(
        self,
        owner: str,
        workflows: Mapping[str, str],
        ttl: float,
        now: float,
        limit: int,
        *,
        instances: Collection[str] | None = None,
    ) -> list[ClaimedStep]:
        """Claim up to ``limit`` queued steps, or running ones whose lease expired.

        Only steps of the given ``{workflow_id: definition_hash}`` and of unfinished
        instances (only of ``instances``, if given); most urgent priority first, then
        oldest. Claim tokens never repeat for a step, even if its row is deleted and
        published again. A claim of a step whose lease expired says ``taken_over``.
        """
        ...

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        """Claim the one published step ``ref`` (instance, step key, attempt) for ``owner``.

        Returns the claim, with a new token and a lease until ``now + ttl``, when the
        step is queued (never claimed) or its lease has expired (``lease_until <=
        now``): a takeover (``taken_over`` is set), whose token is larger than the old
        one, so the old owner's ``renew_step`` and ``finish_step`` are refused from then
        on. Returns ``None``,
        changing nothing, when the step is not claimable:

        * it was never published, or has been withdrawn (checkpointed by the
          orchestrator, or its instance reset by ``retry_from``);
        * it is finished (an outcome is stored);
        * its lease is live (``lease_until > now``), whoever holds it, even ``owner``:
          a duplicate delivery of the same message claims nothing;
        * its instance is finished (completed, failed or cancelled).

        Of concurrent calls for one step, exactly one gets the claim. Check that you
        can run the step's workflow definition before claiming it (a message naming the
        step can carry its ``definition_hash``); the returned ticket says which it is.
        """
        ...

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        """Extend a step lease; False when the step was taken over or withdrawn."""
        ...

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        """Store the outcome under claim ``token``; False (nothing written) if it moved on."""
        ...

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        """The stored outcomes among ``refs`` (steps still queued or running are absent)."""
        ...

    async def wait_for_step_results(self, max_wait: float) -> None:
        """Return when a step may have finished, or after ``max_wait`` seconds."""
        ...


@runtime_checkable
class AdvanceQueue(Protocol):
    """Optional: the two writes of a dispatched advance, each in one round trip.

    An advance that dispatches its steps elsewhere (``runtime.dispatch``) takes the
    instance only if nobody holds it, and ends with one write: the checkpoints, the
    parked state, the release and the newly ready steps. A backend offering these does
    each in one statement; ``advance_queue`` builds them from ``Backend`` and
    ``StepQueue`` methods for any other.
    """

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        """Claim the instance unless that would take it from someone; else ``None``.

        ``None``, changing nothing, when it does not exist, is finished, has a live
        claim, is paused with nothing asked of it, or runs a definition not in
        ``definitions`` (``{workflow_id: definition_hash}``). A write in progress on the
        instance is waited for, and the instance judged as that write left it.
        """
        ...

    async def commit_and_publish(
        self, instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        """``commit`` plus ``publish_steps``, in one transaction.

        The tickets are queued only if the commit is accepted (the fence holds); raises
        like ``commit`` (``LeaseLostError``, ``PayloadTooLargeError``, for an input too).
        """
        ...


@dataclass(frozen=True, slots=True)
class ClaimedStepAndInstance:
    """A step claim, and the claim of its instance when that was taken with it."""

    step: ClaimedStep
    instance: Claim | None = None


@runtime_checkable
class StepAndInstanceClaim(Protocol):
    """Optional: ``claim_step`` and ``claim_if_free`` in one round trip.

    For a step that is its instance's only one out (a chain): the advance that follows
    the step then already holds the instance. The caller holds that claim while the
    step runs, so it must give it up (or advance) soon: other advances of the instance
    wait for it meanwhile.
    """

    async def claim_step_and_instance(
        self,
        ref: StepRef,
        owner: str,
        step_ttl: float,
        definitions: Mapping[str, str],
        claim_ttl: float,
        now: float,
    ) -> ClaimedStepAndInstance | None:
        """``claim_step(ref, owner, step_ttl, now)``; ``None`` exactly when it is ``None``.

        With the step, the instance is claimed for ``claim_ttl`` (``instance``) only
        if ``claim_if_free`` would take it, nothing is asked of it (no control request)
        and no other step of it is queued or running; else ``instance`` is ``None``
        and the instance is left as it was.
        """
        ...


@dataclass(frozen=True, slots=True)
class NextStepClaim:
    """Who claims a chain's next step with the commit that queues it, and for how long:
    the step until ``now + step_ttl``, the instance until ``now + claim_ttl``."""

    owner: str
    step_ttl: float
    claim_ttl: float
    now: float


@dataclass(frozen=True, slots=True)
class CommittedChain:
    """What ``commit_and_claim_next`` did: the commit's control request (as
    ``commit_and_publish`` returns it), and the next step with its instance when it
    claimed them (``None``: the tickets were only queued, the claim let go)."""

    request: ControlRequest | None
    next: ClaimedStepAndInstance | None


@runtime_checkable
class CommitAndClaimNext(Protocol):
    """Optional: ``commit_and_publish`` that also claims the one step it queues.

    For a process that runs a chain's next step itself (the Celery bridge's
    continuation): instead of releasing the instance and then claiming step and
    instance again (``claim_step_and_instance``), the commit hands both over to the
    same owner, fenced as those claims are. One write per step instead of two.
    """

    async def commit_and_claim_next(
        self,
        claim: Claim,
        write: StepWrite,
        tickets: Sequence[StepTicket],
        next_claim: NextStepClaim,
    ) -> CommittedChain:
        """``commit_and_publish(instance_id, claim.token, write, tickets)``, raising as
        it does; in the same transaction, when all of these hold:

        * ``tickets`` is one step, not queued before (no row for its ref);
        * ``write`` releases the claim and leaves the instance unfinished, not paused;
        * nothing is asked of the instance (no control request, also none asked while
          ``claim`` was held);
        * no other step of the instance is queued or running once the write's
          checkpoints are in;

        that step is claimed for ``next_claim.owner`` (a new token, ``taken_over``
        false) and the instance stays claimed by it under the next claim token, as
        ``claim_step_and_instance`` would take them, instead of being released.
        ``next.instance`` is the instance as ``write`` left it (``claim``'s checkpoints
        and the write's). Else ``next`` is ``None`` and it is ``commit_and_publish``.
        """
        ...


async def commit_and_claim_next(
    queue: AdvanceQueue,
    claim: Claim,
    write: StepWrite,
    tickets: Sequence[StepTicket],
    next_claim: NextStepClaim,
) -> CommittedChain:
    """``CommitAndClaimNext.commit_and_claim_next`` on any advance queue: native when
    the backend has it, else ``commit_and_publish`` handing nothing over."""
    if isinstance(queue, CommitAndClaimNext):
        return await queue.commit_and_claim_next(claim, write, tickets, next_claim)
    instance_id = claim.instance.record.instance_id
    return CommittedChain(
        await queue.commit_and_publish(instance_id, claim.token, write, tickets), None
    )


def chained_claim(
    claim: Claim, write: StepWrite, owner: str, token: int, lease_until: float
) -> Claim:
    """The instance claim ``commit_and_claim_next`` hands over, for a backend that does
    not read it back: ``claim``'s instance with ``write`` applied, held by ``owner``.

    Exact because nobody else wrote to the instance while ``claim`` was held but for
    a control request, with which nothing is handed over.
    """
    loaded = claim.instance
    record = dataclasses.replace(
        committed_record(loaded.record, write),
        owner=owner,
        claim_token=token,
        lease_until=lease_until,
    )
    checkpoints = {**loaded.checkpoints, **dict(write.checkpoints)}
    return Claim(LoadedInstance(record, checkpoints), token)


async def claim_step_and_instance(
    queue: StepQueue,
    ref: StepRef,
    owner: str,
    step_ttl: float,
    definitions: Mapping[str, str],
    claim_ttl: float,
    now: float,
) -> ClaimedStepAndInstance | None:
    """``StepAndInstanceClaim.claim_step_and_instance`` on any step queue: native when
    the backend has it, else the step alone (the instance is claimed after the step)."""
    if isinstance(queue, StepAndInstanceClaim):
        return await queue.claim_step_and_instance(
            ref, owner, step_ttl, definitions, claim_ttl, now
        )
    step = await queue.claim_step(ref, owner, step_ttl, now)
    return None if step is None else ClaimedStepAndInstance(step)


class _AdvanceFromParts:
    """``AdvanceQueue`` built from ``Backend`` and ``StepQueue`` methods (more round trips)."""

    def __init__(self, backend: Backend, queue: StepQueue) -> None:
        self._backend = backend
        self._queue = queue

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        return await claim_if_free(self._backend, instance_id, owner, definitions, ttl, now)

    async def commit_and_publish(
        self, instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        # Published first: a step is on record as dispatched only once it is queued. A
        # refused commit leaves queued tickets that nobody sends; the next holder
        # publishes the same refs again (a no-op) and sends them.
        await self._queue.publish_steps(tickets)
        return await self._backend.commit(instance_id, token, write)


async def claim_if_free(
    backend: Backend,
    instance_id: str,
    owner: str,
    definitions: Mapping[str, str],
    ttl: float,
    now: float,
) -> Claim | None:
    """``AdvanceQueue.claim_if_free`` on any backend: native when it has one.

    Without it, a read then a claim: another claim between the two can still be taken
    over (the shipped backends all have the atomic one).
    """
    if isinstance(backend, AdvanceQueue):
        return await backend.claim_if_free(instance_id, owner, definitions, ttl, now)
    record = await backend.get_record(instance_id)
    if record is None or not is_free_for(record, definitions, now):
        return None
    return await backend.claim(instance_id, owner, ttl, now)


def advance_queue(backend: Backend) -> AdvanceQueue:
    """The backend's ``AdvanceQueue``, or one built from its other methods."""
    if isinstance(backend, AdvanceQueue):
        return backend
    if not isinstance(backend, StepQueue):
        raise TypeError(f"{type(backend).__name__} has no step queue")
    return _AdvanceFromParts(backend, backend)
