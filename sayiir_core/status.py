"""``WorkflowStatus``: where an instance stands, as returned by runs and clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sayiir_core.machine.state import ErrorInfo


class Status(StrEnum):
    """Lifecycle of an instance. Terminal: completed, failed, cancelled."""

    PENDING = "pending"  # submitted; no worker has started it yet
    RUNNING = "running"
    WAITING = "waiting"  # parked on a durable delay or a retry back-off
    AWAITING_SIGNAL = "awaiting_signal"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """A snapshot of one instance's state.

    ``status`` is one of ``pending``, ``running``, ``waiting``, ``awaiting_signal``,
    ``paused``, ``completed``, ``failed``, ``cancelled``. ``error`` reads like
    ``"ValueError: card declined"``.
    """

    status: str
    instance_id: str | None = None
    workflow_id: str | None = None
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    failed_task_id: str | None = None
    reason: str | None = None
    cancelled_by: str | None = None
    paused_by: str | None = None
    wake_at: datetime | None = None
    delay_id: str | None = None
    signal_id: str | None = None
    signal_name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    error_detail: ErrorInfo | None = field(default=None, repr=False, compare=False)

    def is_completed(self) -> bool:
        return self.status == Status.COMPLETED

    def is_failed(self) -> bool:
        return self.status == Status.FAILED

    def is_cancelled(self) -> bool:
        return self.status == Status.CANCELLED

    def is_paused(self) -> bool:
        return self.status == Status.PAUSED

    def is_waiting(self) -> bool:
        return self.status == Status.WAITING

    def is_awaiting_signal(self) -> bool:
        return self.status == Status.AWAITING_SIGNAL

    def is_in_progress(self) -> bool:
        return not Status(self.status).is_terminal

    def is_finished(self) -> bool:
        return Status(self.status).is_terminal
