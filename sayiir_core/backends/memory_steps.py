"""The in-memory backend's state, its fenced commit and its step queue.

``MemoryState`` holds what ``InMemoryBackend`` keeps (instances, their checkpoints,
events, signals and published steps) and the commit every write path shares;
``InMemoryStepQueue`` adds the step queue and ``AdvanceQueue`` (see step_queue.py),
each under the one lock, so nothing happens in between.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sayiir_core.backends._free import is_free_for
from sayiir_core.backends.base import (
    BufferedSignal,
    Claim,
    ControlRequest,
    HistoryEvent,
    InstanceRecord,
    LoadedInstance,
    StepWrite,
)
from sayiir_core.backends.forks import ProcessOwner
from sayiir_core.backends.notify import FinishNotifier, WorkNotifier
from sayiir_core.backends.rules import committed_record, missing
from sayiir_core.backends.step_queue import (
    ClaimedStep,
    ClaimedStepAndInstance,
    CommittedChain,
    NextStepClaim,
    StepRef,
    StepResult,
    StepTicket,
)
from sayiir_core.errors import LeaseLostError
from sayiir_core.status import Status


@dataclass
class QueuedStep:
    """A published step: queued (no owner), running (owner and lease) or finished."""

    ticket: StepTicket
    owner: str | None = None
    token: int = 0
    lease_until: float = 0.0
    result: StepResult | None = None


@dataclass
class Stored:
    """One instance as the backend keeps it."""

    record: InstanceRecord
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    events: list[HistoryEvent] = field(default_factory=list)
    signals: list[BufferedSignal] = field(default_factory=list)
    steps: dict[StepRef, QueuedStep] = field(default_factory=dict)

    def append_events(self, events: Sequence[HistoryEvent]) -> None:
        # Numbered when read: history is read far less often than it is written.
        self.events.extend(events)


class MemoryState:
    """What an ``InMemoryBackend`` keeps, and the commit its write paths share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, Stored] = {}
        self._signal_ids = 0
        self._creation_order = 0
        self._order: dict[str, int] = {}
        self._notifier = WorkNotifier()
        self._step_notifier = WorkNotifier()
        self._finished = FinishNotifier()
        self._step_tokens = 0
        self._owner = ProcessOwner()

    def _commit_locked(
        self, instance_id: str, token: int, write: StepWrite
    ) -> ControlRequest | None:
        stored = self._require(instance_id)
        if stored.record.claim_token != token or stored.record.owner is None:
            raise LeaseLostError(
                f"instance {instance_id!r}: claim {token} was taken over "
                f"(current claim {stored.record.claim_token}); write refused"
            )
        # Check every key before writing any, so a refused step leaves nothing behind.
        keys = [key for key, _ in write.checkpoints]
        for index, key in enumerate(keys):
            if key in stored.checkpoints or key in keys[:index]:
                raise LeaseLostError(
                    f"instance {instance_id!r}: step {key!r} is already checkpointed"
                )
        stored.checkpoints.update(write.checkpoints)
        _drop_checkpointed_steps(stored, write)
        if write.consumed_signal is not None:
            stored.signals = [s for s in stored.signals if s.signal_id != write.consumed_signal]
        stored.record = committed_record(stored.record, write)
        stored.append_events(write.events)
        return stored.record.control_request

    def _queued(self, ref: StepRef) -> QueuedStep | None:
        stored = self._instances.get(ref.instance_id)
        return stored.steps.get(ref) if stored is not None else None

    def _require(self, instance_id: str) -> Stored:
        stored = self._instances.get(instance_id)
        if stored is None:
            raise missing(instance_id)
        return stored

    @staticmethod
    def _take(stored: Stored, owner: str, ttl: float, now: float) -> Claim:
        token = stored.record.claim_token + 1
        stored.record = dataclasses.replace(
            stored.record, owner=owner, claim_token=token, lease_until=now + ttl
        )
        return Claim(LoadedInstance(stored.record, dict(stored.checkpoints)), token)


class InMemoryStepQueue(MemoryState):
    """The step queue and ``AdvanceQueue`` of ``InMemoryBackend`` (see step_queue.py)."""

    # -- the step queue (see step_queue.py) ------------------------------------------

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        with self._lock:
            for ticket in tickets:
                stored = self._require(ticket.ref.instance_id)
                stored.steps.setdefault(ticket.ref, QueuedStep(ticket))
        self._notifier.notify()

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
        with self._lock:
            candidates = sorted(
                (
                    step
                    for stored in self._instances.values()
                    if not stored.record.status.is_terminal
                    and (instances is None or stored.record.instance_id in instances)
                    for step in stored.steps.values()
                    if workflows.get(step.ticket.workflow_id) == step.ticket.definition_hash
                    and step.result is None
                    and (step.owner is None or step.lease_until <= now)
                ),
                key=lambda step: (step.ticket.priority, step.ticket.now),
            )
            return [
                self._claim_queued(step, owner, now + ttl) for step in candidates[: max(limit, 0)]
            ]

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        with self._lock:
            stored = self._instances.get(ref.instance_id)
            if stored is None or stored.record.status.is_terminal:
                return None
            step = stored.steps.get(ref)
            if step is None or step.result is not None:
                return None  # never published, withdrawn, or finished
            if step.owner is not None and step.lease_until > now:
                return None  # held by a live lease
            return self._claim_queued(step, owner, now + ttl)

    def _claim_queued(self, step: QueuedStep, owner: str, lease_until: float) -> ClaimedStep:
        """Take a claimable step (under the lock); an owner still recorded is a takeover."""
        taken_over = step.owner is not None
        self._step_tokens += 1  # one counter: a re-published step never reuses one
        step.owner, step.token, step.lease_until = owner, self._step_tokens, lease_until
        return ClaimedStep(step.ticket, step.token, taken_over)

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        with self._lock:
            step = self._queued(ref)
            if step is None or step.token != token or step.result is not None:
                return False
            step.lease_until = now + ttl
            return True

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        with self._lock:
            step = self._queued(ref)
            if step is None or step.token != token:
                return False
            step.result, step.owner = result, None
        self._step_notifier.notify()
        return True

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        found = {}
        with self._lock:
            for ref in refs:
                step = self._queued(ref)
                if step is not None and step.result is not None:
                    found[ref] = step.result
        return found

    async def wait_for_step_results(self, max_wait: float) -> None:
        await self._step_notifier.wait(max_wait)

    # -- AdvanceQueue (see step_queue.py): each under the lock, so nothing in between --

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        with self._lock:
            stored = self._instances.get(instance_id)
            if stored is None or not is_free_for(stored.record, definitions, now):
                return None
            return self._take(stored, owner, ttl, now)

    async def commit_and_publish(
        self, instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        with self._lock:
            for ticket in tickets:
                self._require(ticket.ref.instance_id)  # refused before anything changes
            # Only after an accepted commit (it raises when the fence does not hold).
            request = self._commit_locked(instance_id, token, write)
            for ticket in tickets:
                stored = self._instances[ticket.ref.instance_id]
                stored.steps.setdefault(ticket.ref, QueuedStep(ticket))
        if tickets:
            self._notifier.notify()
        if write.status.is_terminal:
            self._finished.notify(instance_id)
        return request

    async def commit_and_claim_next(
        self,
        claim: Claim,
        write: StepWrite,
        tickets: Sequence[StepTicket],
        next_claim: NextStepClaim,
    ) -> CommittedChain:
        """``CommitAndClaimNext`` (see step_queue.py), under the lock."""
        instance_id = claim.instance.record.instance_id
        with self._lock:
            for ticket in tickets:
                self._require(ticket.ref.instance_id)
            stored = self._require(instance_id)
            new = len(tickets) == 1 and tickets[0].ref not in stored.steps
            request = self._commit_locked(instance_id, claim.token, write)
            for ticket in tickets:
                self._instances[ticket.ref.instance_id].steps.setdefault(
                    ticket.ref, QueuedStep(ticket)
                )
            chained = None
            if (
                new
                and write.release
                and write.status is not Status.PAUSED
                and _goes_on_alone(stored, tickets[0].ref)
            ):
                owner, now = next_claim.owner, next_claim.now
                step = self._claim_queued(
                    stored.steps[tickets[0].ref], owner, now + next_claim.step_ttl
                )
                chained = ClaimedStepAndInstance(
                    step, self._take(stored, owner, next_claim.claim_ttl, now)
                )
        if tickets:
            self._notifier.notify()
        if write.status.is_terminal:
            self._finished.notify(instance_id)
        return CommittedChain(request, chained)


def _goes_on_alone(stored: Stored, ref: StepRef) -> bool:
    """After a commit: the instance runs on, nothing is asked of it, and ``ref`` is its
    only step row (``commit_and_claim_next`` may hand both over). A finished step's row
    counts too: its outcome waits for an advance, which a hand-over would put off."""
    record = stored.record
    if record.status.is_terminal or record.status is Status.PAUSED:
        return False
    if record.control_request is not None:
        return False
    return all(other == ref for other in stored.steps)


def _drop_checkpointed_steps(stored: Stored, write: StepWrite) -> None:
    """A checkpoint replaces the step's queue rows; a finished instance needs none."""
    if not stored.steps:
        return
    if write.status.is_terminal:
        stored.steps.clear()
        return
    keys = {key for key, _ in write.checkpoints}
    stored.steps = {ref: step for ref, step in stored.steps.items() if ref.step_key not in keys}
