"""The storage seam: the ``Backend`` protocol and the records it stores.

Only ``sayiir_core.runtime`` and the clients call a backend. Every method is async and
each mutating call is one transaction. Payloads (inputs, outputs, signal payloads) are
bytes already encoded by the codec; times are seconds since the epoch.

Ownership: an instance is advanced by whoever holds its *claim*. A claim has a token
that grows by one on every new claim; ``commit`` refuses a write whose token is not the
current one (``LeaseLostError``), so a worker that lost its lease can never write a
late checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from sayiir_core.backends.notify import FinishWatch
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status


class ConflictPolicy(StrEnum):
    """What ``create`` does when the instance id exists already."""

    FAIL = "fail"
    USE_EXISTING = "use_existing"
    TERMINATE_EXISTING = "terminate_existing"


class ControlRequest(StrEnum):
    """A cancel or pause asked for while someone holds the claim."""

    CANCEL = "cancel"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One append-only history entry.

    ``kind`` is one of: ``started``, ``task_started``, ``task_completed``, ``task_failed``,
    ``retry_scheduled``, ``timer_started``, ``timer_fired``, ``signal_sent``,
    ``signal_received``, ``paused``, ``unpaused``, ``cancelled``, ``completed``,
    ``failed``, ``retried_from``, ``definition_changed``.
    """

    kind: str
    at: float
    step_key: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    detail: Mapping[str, Any] | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class NewInstance:
    """What ``create`` stores for a new instance.

    ``trace_context`` is the submitter's W3C trace context (``traceparent``...), set only
    while tracing is on; it is stored in the ``started`` history event's detail.
    """

    instance_id: str
    workflow_id: str
    definition_hash: str
    input: bytes
    status: Status
    now: float
    owner: str | None = None
    lease_until: float | None = None
    priority: int = 3
    trace_context: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One stored instance (without its checkpoints)."""

    instance_id: str
    workflow_id: str
    definition_hash: str
    status: Status
    input: bytes
    created_at: float
    updated_at: float
    output: bytes | None = None
    error: ErrorInfo | None = None
    control: Mapping[str, Any] = field(default_factory=dict)
    wake_at: float | None = None
    reason: str | None = None
    cancelled_by: str | None = None
    paused_by: str | None = None
    control_request: ControlRequest | None = None
    owner: str | None = None
    claim_token: int = 0
    lease_until: float | None = None
    priority: int = 3


@dataclass(frozen=True, slots=True)
class LoadedInstance:
    """An instance with its checkpoints, in the order they were written."""

    record: InstanceRecord
    checkpoints: Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof of ownership: pass ``token`` to every ``commit``."""

    instance: LoadedInstance
    token: int


@dataclass(frozen=True, slots=True)
class StepWrite:
    """Everything one step changes, written in one transaction by ``commit``.

    ``release`` gives up the claim (the instance parked, finished or was paused).
    ``consumed_signal`` deletes that buffered signal in the same transaction that
    checkpoints its payload, so a signal is neither lost nor delivered twice.
    ``definition_hash`` rebinds the instance to another definition (an accepted
    ``allow_definition_change`` resume). ``priority`` (1 first, 5 last) is that of the
    steps the instance can run next, which orders claims.
    """

    status: Status
    control: Mapping[str, Any]
    now: float
    checkpoints: Sequence[tuple[str, bytes]] = ()
    output: bytes | None = None
    error: ErrorInfo | None = None
    wake_at: float | None = None
    events: Sequence[HistoryEvent] = ()
    consumed_signal: int | None = None
    release: bool = False
    definition_hash: str | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class BufferedSignal:
    signal_id: int
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of ``list_instances``; pass ``next_cursor`` back for the next one."""

    items: Sequence[InstanceRecord]
    next_cursor: str | None


class OpensAndCloses:
    """``async with backend:`` opens it on entry and closes it on exit.

    Ownership rule, the same everywhere: whoever creates or opens a backend closes it.
    A client or worker that is handed a backend uses it and leaves it open.
    """

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class Backend(Protocol):
    """Durable storage for instances, checkpoints, signals and history."""

    async def open(self) -> None:
        """Connect and migrate; idempotent. Called before first use."""
        ...

    async def close(self) -> None: ...

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        """Store a new instance; returns ``(record, created)``.

        ``FAIL`` raises ``InstanceAlreadyExistsError``; ``USE_EXISTING`` returns the
        existing record with ``created=False``; ``TERMINATE_EXISTING`` cancels and
        replaces it.
        """
        ...

    async def load(self, instance_id: str) -> LoadedInstance | None: ...

    async def get_record(self, instance_id: str) -> InstanceRecord | None: ...

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None: ...

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        """Take the claim whatever its lease (an explicit resume); bumps the token."""
        ...

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        """Claim up to ``limit`` runnable instances whose lease is free or expired.

        ``workflows`` maps each workflow id this worker can run to its definition hash:
        an instance started by another definition is left for a worker that has it
        (rolling deploys), never run with the wrong code.

        Runnable: ``pending`` or ``running``; ``waiting`` or ``awaiting_signal`` with
        ``wake_at <= now``; or carrying a control request.
        """
        ...

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        """Extend the lease; False if the claim was lost."""
        ...

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        """Apply one step atomically; returns a pending cancel/pause request, if any.

        Raises ``LeaseLostError`` when ``token`` is not the current claim token.
        """
        ...

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        """Cancel or pause: at once when nobody holds a live claim, else at the next commit."""
        ...

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord: ...

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        """Buffer a signal (FIFO per name) and wake the instance if it waits for that name.

        At most ``rules.MAX_BUFFERED_SIGNALS`` unconsumed signals per instance: at the
        bound, raise ``rules.signal_buffer_full(...)`` (``SignalBufferFullError``) and
        store nothing. Count and insert in one transaction with the instance locked
        (``rules.check_signal_room``), so concurrent senders cannot overshoot.
        """
        ...

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        """The oldest buffered signal with that name, without consuming it."""
        ...

    async def list_instances(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstancePage: ...

    async def history(self, instance_id: str) -> list[HistoryEvent]: ...

    async def wait_for_work(self, max_wait: float) -> None:
        """Return when work may have become runnable, or after ``max_wait`` seconds.

        Work means a submit, a signal or an unpause. Backends without a push channel
        simply sleep; workers look for work after it returns.
        """
        ...

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        """Subscribe to the instance finishing (completed, failed or cancelled).

        Enter it before reading the instance: a finish committed after that read then
        ends the watch's next ``wait``. A watch may also end early or hear nothing (a
        finish in another process on SQLite, a lost connection), so the waiter re-reads
        at least every ``watch.poll_interval`` seconds.
        """
        ...

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        """Drop the checkpoints of ``task_id`` and of every step written after it.

        The instance goes back to ``pending`` with its error and retry state cleared, so a
        worker or ``resume`` runs it again from that step.
        """
        ...
