"""``InMemoryBackend``: the full backend contract in a process's memory.

Use it for tests and prototypes; nothing survives the process. It is thread-safe, so
one instance can be shared by the sync face, async clients and threaded workers.

After ``os.fork()`` the child has its own copy of the data as it was at the fork;
nothing is shared with the parent from then on. The child's ``open()`` replaces the
lock (another thread may have held it at the fork) and the wake-up notifiers (their
waiters belong to the parent's event loops).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from sayiir_core.backends._free import is_free_for
from sayiir_core.backends.base import (
    BufferedSignal,
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
    LoadedInstance,
    NewInstance,
    OpensAndCloses,
    StepWrite,
)
from sayiir_core.backends.forks import ProcessOwner, keep_forever
from sayiir_core.backends.notify import FinishNotifier, FinishWatch, WorkNotifier
from sayiir_core.backends.rules import (
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_room,
    check_signal_target,
    committed_record,
    decode_cursor,
    encode_cursor,
    is_claimable,
    keeps_existing,
    missing,
    new_record,
    signal_wakes,
    terminated_record,
)
from sayiir_core.backends.stats import ReadyBacklog, ready_since
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

_FINISH_POLL_INTERVAL = 5.0


@dataclass
class _QueuedStep:
    """A published step: queued (no owner), running (owner and lease) or finished."""

    ticket: StepTicket
    owner: str | None = None
    token: int = 0
    lease_until: float = 0.0
    result: StepResult | None = None


@dataclass
class _Stored:
    record: InstanceRecord
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    events: list[HistoryEvent] = field(default_factory=list)
    signals: list[BufferedSignal] = field(default_factory=list)
    steps: dict[StepRef, _QueuedStep] = field(default_factory=dict)

    def append_events(self, events: Sequence[HistoryEvent]) -> None:
        # Numbered when read: history is read far less often than it is written.
        self.events.extend(events)


class InMemoryBackend(OpensAndCloses):
    """A backend that keeps everything in dictionaries.

    Example::

        backend = InMemoryBackend()
        status = run_durable_workflow(wf, "order-1", {"id": 1}, backend=backend)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, _Stored] = {}
        self._signal_ids = 0
        self._creation_order = 0
        self._order: dict[str, int] = {}
        self._notifier = WorkNotifier()
        self._step_notifier = WorkNotifier()
        self._finished = FinishNotifier()
        self._step_tokens = 0
        self._owner = ProcessOwner()

    def __repr__(self) -> str:
        return f"InMemoryBackend(instances={len(self._instances)})"

    async def open(self) -> None:
        """Nothing to connect; in a forked child, drops the parent's lock and notifiers."""
        self._owner.claim(self._drop_inherited)

    def _drop_inherited(self) -> None:
        keep_forever(self._notifier, self._step_notifier, self._finished)
        self._lock = threading.Lock()
        self._notifier = WorkNotifier()
        self._step_notifier = WorkNotifier()
        self._finished = FinishNotifier()

    async def close(self) -> None:
        return None

    async def wait_for_work(self, max_wait: float) -> None:
        await self._notifier.wait(max_wait)

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        # Every finish happens in this process and fires the watch: the re-read is
        # only a backstop.
        return self._finished.watch(instance_id, _FINISH_POLL_INTERVAL)

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        with self._lock:
            existing = self._instances.get(new.instance_id)
            if existing is not None and keeps_existing(existing.record, policy):
                return existing.record, False
            record, event = new_record(new, existing.record if existing is not None else None)
            stored = _Stored(record)
            if existing is not None:
                stored.append_events([*existing.events, terminated_record(new.now)])
            stored.append_events([event])
            self._instances[new.instance_id] = stored
            self._creation_order += 1
            self._order[new.instance_id] = self._creation_order
        if record.status is Status.PENDING:
            self._notifier.notify()
        return record, True

    async def load(self, instance_id: str) -> LoadedInstance | None:
        with self._lock:
            stored = self._instances.get(instance_id)
            if stored is None:
                return None
            return LoadedInstance(stored.record, dict(stored.checkpoints))

    async def get_record(self, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            stored = self._instances.get(instance_id)
            return stored.record if stored is not None else None

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        with self._lock:
            stored = self._instances.get(instance_id)
            return stored.checkpoints.get(key) if stored is not None else None

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        with self._lock:
            stored = self._require(instance_id)
            return self._take(stored, owner, ttl, now)

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        with self._lock:
            candidates = sorted(
                (
                    stored
                    for stored in self._instances.values()
                    if workflows.get(stored.record.workflow_id) == stored.record.definition_hash
                    and is_claimable(stored.record, now)
                ),
                key=lambda s: (s.record.priority, s.record.wake_at or 0.0, s.record.created_at),
            )
            return [self._take(stored, owner, ttl, now) for stored in candidates[: max(limit, 0)]]

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        with self._lock:
            stored = self._instances.get(instance_id)
            if stored is None or stored.record.claim_token != token or stored.record.owner is None:
                return False
            stored.record = dataclasses.replace(stored.record, lease_until=now + ttl)
            return True

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        with self._lock:
            request = self._commit_locked(instance_id, token, write)
        if write.status.is_terminal:
            self._finished.notify(instance_id)
        return request

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

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        with self._lock:
            stored = self._require(instance_id)
            stored.record, events = apply_control_request(stored.record, request, reason, by, now)
            stored.append_events(events)
            record = stored.record
            if record.status.is_terminal:
                stored.steps.clear()
        if record.status.is_terminal:
            self._finished.notify(instance_id)
        return record

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        with self._lock:
            stored = self._require(instance_id)
            stored.record, events = apply_unpause(stored.record, now)
            stored.append_events(events)
        self._notifier.notify()
        return stored.record

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        with self._lock:
            stored = self._require(instance_id)
            check_signal_target(stored.record, name)
            check_signal_room(stored.record, name, len(stored.signals))
            self._signal_ids += 1
            stored.signals.append(BufferedSignal(self._signal_ids, name, payload))
            wakes = signal_wakes(stored.record, name)
            if wakes:
                stored.record = dataclasses.replace(stored.record, wake_at=now)
            stored.append_events([HistoryEvent("signal_sent", now, detail={"name": name})])
        if wakes:
            self._notifier.notify()

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        with self._lock:
            stored = self._instances.get(instance_id)
            if stored is None:
                return None
            return next((s for s in stored.signals if s.name == name), None)

    async def list_instances(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstancePage:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        after = decode_cursor(cursor)
        with self._lock:
            rows = sorted(
                (
                    (self._order[s.record.instance_id], s.record)
                    for s in self._instances.values()
                    if (status is None or s.record.status == status)
                    and (workflow_id is None or s.record.workflow_id == workflow_id)
                ),
                key=lambda row: row[0],
                reverse=True,
            )
        if after is not None:
            rows = [row for row in rows if row[0] < after]
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
        return InstancePage([record for _, record in page], next_cursor)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        with self._lock:
            events = list(self._require(instance_id).events)
        return [dataclasses.replace(event, seq=seq) for seq, event in enumerate(events, 1)]

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        with self._lock:
            stored = self._require(instance_id)
            keys = list(stored.checkpoints)
            record, keep, event = apply_reset(stored.record, keys, task_id, now)
            stored.checkpoints = {key: stored.checkpoints[key] for key in keys[:keep]}
            stored.steps.clear()
            stored.record = record
            stored.append_events([event])
        self._notifier.notify()
        return record

    # -- the step queue (see step_queue.py) ------------------------------------------

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        with self._lock:
            for ticket in tickets:
                stored = self._require(ticket.ref.instance_id)
                stored.steps.setdefault(ticket.ref, _QueuedStep(ticket))
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

    def _claim_queued(self, step: _QueuedStep, owner: str, lease_until: float) -> ClaimedStep:
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
                stored.steps.setdefault(ticket.ref, _QueuedStep(ticket))
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
                    ticket.ref, _QueuedStep(ticket)
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

    def _queued(self, ref: StepRef) -> _QueuedStep | None:
        stored = self._instances.get(ref.instance_id)
        return stored.steps.get(ref) if stored is not None else None

    def _require(self, instance_id: str) -> _Stored:
        stored = self._instances.get(instance_id)
        if stored is None:
            raise missing(instance_id)
        return stored

    @staticmethod
    def _take(stored: _Stored, owner: str, ttl: float, now: float) -> Claim:
        token = stored.record.claim_token + 1
        stored.record = dataclasses.replace(
            stored.record, owner=owner, claim_token=token, lease_until=now + ttl
        )
        return Claim(LoadedInstance(stored.record, dict(stored.checkpoints)), token)

    # -- BackendStats (see stats.py): one pass under the lock ---------------------------

    async def count_by_status(self) -> dict[Status, int]:
        with self._lock:
            return dict(Counter(stored.record.status for stored in self._instances.values()))

    async def ready_backlog(self, now: float) -> ReadyBacklog:
        with self._lock:
            since = [
                ready_since(r.updated_at, r.wake_at, r.lease_until, now)
                for r in (stored.record for stored in self._instances.values())
                if is_claimable(r, now)
            ]
            since += [
                ready_since(step.ticket.now, None, step.lease_until if step.owner else None, now)
                for stored in self._instances.values()
                if not stored.record.status.is_terminal
                for step in stored.steps.values()
                if step.result is None and (step.owner is None or step.lease_until <= now)
            ]
        return ReadyBacklog.of(len(since), min(since, default=None), now)


def _goes_on_alone(stored: _Stored, ref: StepRef) -> bool:
    """After a commit: the instance runs on, nothing is asked of it, and ``ref`` is its
    only step queued or running (``commit_and_claim_next`` may hand both over)."""
    record = stored.record
    if record.status.is_terminal or record.status is Status.PAUSED:
        return False
    if record.control_request is not None:
        return False
    return all(other == ref or step.result is not None for other, step in stored.steps.items())


def _drop_checkpointed_steps(stored: _Stored, write: StepWrite) -> None:
    """A checkpoint replaces the step's queue rows; a finished instance needs none."""
    if not stored.steps:
        return
    if write.status.is_terminal:
        stored.steps.clear()
        return
    keys = {key for key, _ in write.checkpoints}
    stored.steps = {ref: step for ref, step in stored.steps.items() if ref.step_key not in keys}
