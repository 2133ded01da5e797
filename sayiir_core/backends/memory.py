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
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

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
from sayiir_core.backends.forks import keep_forever
from sayiir_core.backends.memory_steps import InMemoryStepQueue, Stored
from sayiir_core.backends.notify import FinishNotifier, FinishWatch, WorkNotifier
from sayiir_core.backends.rules import (
    apply_control_request,
    apply_reset,
    apply_unpause,
    check_signal_room,
    check_signal_target,
    decode_cursor,
    encode_cursor,
    is_claimable,
    keeps_existing,
    new_record,
    signal_wakes,
    terminated_record,
)
from sayiir_core.backends.stats import ReadyBacklog, ready_since
from sayiir_core.status import Status

_FINISH_POLL_INTERVAL = 5.0


class InMemoryBackend(InMemoryStepQueue, OpensAndCloses):
    """A backend that keeps everything in dictionaries.

    Example::

        backend = InMemoryBackend()
        status = run_durable_workflow(wf, "order-1", {"id": 1}, backend=backend)
    """

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
            stored = Stored(record)
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
