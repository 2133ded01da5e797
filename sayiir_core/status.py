"""Where an instance stands: ``Status``, ``WorkflowStatus`` and ``ErrorInfo``.

This module imports nothing else of the package, so both the pure machine and the
storage layer can use these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

# What ``WorkflowStatus.status`` reports for an instance stored as ``pending``: Sayiir 1.0
# calls a submitted instance that no worker has picked up yet ``in_progress``.
IN_PROGRESS = "in_progress"


class Status(StrEnum):
    """Lifecycle of an instance, as stored. Terminal: completed, failed, cancelled.

    The values are what the backends store. One is reported under another name:
    ``PENDING`` (submitted, no worker has started it yet) reads ``in_progress`` in
    ``WorkflowStatus.status``, as in Sayiir 1.0; ``Status("in_progress")`` is ``PENDING``.
    """

    PENDING = "pending"  # submitted; no worker has started it yet (reported in_progress)
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

    @property
    def reported(self) -> str:
        """The string ``WorkflowStatus.status`` shows for this state."""
        return IN_PROGRESS if self is Status.PENDING else self.value

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        # The reported name of the stored ``pending`` state, so that every string a
        # WorkflowStatus shows converts back (list_instances(status="in_progress")).
        return cls.PENDING if value == IN_PROGRESS else None


_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# Sayiir 1.0 names the states like its Rust enum in ``repr``: ``WorkflowStatus::Completed``.
_REPR_NAMES = {
    Status.PENDING: "InProgress",
    Status.RUNNING: "Running",
    Status.WAITING: "Waiting",
    Status.AWAITING_SIGNAL: "AwaitingSignal",
    Status.PAUSED: "Paused",
    Status.COMPLETED: "Completed",
    Status.FAILED: "Failed",
    Status.CANCELLED: "Cancelled",
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an instance failed, in a form that survives storage.

    ``kind`` tells which typed exception to raise for it: ``task``, ``timeout``,
    ``serialization``, ``signal_timeout`` or ``workflow`` (a structural problem such as a
    route key without a branch). ``traceback`` holds the frames of the task's own code
    (``Traceback (most recent call last): ...``) when a task raised.

    ``str()`` is the one-line form, ``ValueError: card declined``; ``full_text()`` adds
    the traceback after a blank line, the way Sayiir 1.0 reports a task error.
    """

    error_type: str
    message: str
    task_id: str | None = None
    kind: str = "task"
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"

    def full_text(self) -> str:
        """``str(self)``, then the task's traceback (if any) after a blank line."""
        return f"{self}\n\n{self.traceback}" if self.traceback else str(self)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "error_type": self.error_type,
            "message": self.message,
            "task_id": self.task_id,
            "kind": self.kind,
        }
        if self.traceback is not None:
            data["traceback"] = self.traceback
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorInfo:
        # Errors stored before tracebacks were kept have no "traceback" key.
        return cls(
            data["error_type"],
            data["message"],
            data.get("task_id"),
            data["kind"],
            data.get("traceback"),
        )


@dataclass(frozen=True, slots=True, repr=False)
class WorkflowStatus:
    """A snapshot of one instance's state.

    ``status`` is one of ``in_progress`` (submitted, not yet picked up by a worker),
    ``running``, ``waiting``, ``awaiting_signal``, ``paused``, ``completed``, ``failed``,
    ``cancelled``. ``error`` reads like ``"ValueError: card declined"``, followed by the
    task's traceback after a blank line when a task raised. ``repr()`` names the state
    the way Sayiir 1.0 does, then the details: ``WorkflowStatus::Completed(...)``.
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
    # Which definition started the instance: a worker runs only the instances of the
    # definitions it serves (see ``Workflow.definition_hash``).
    definition_hash: str | None = field(default=None, compare=False)

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
        """Not finished yet: submitted, running, parked or paused."""
        return not Status(self.status).is_terminal

    def is_finished(self) -> bool:
        return Status(self.status).is_terminal

    def __repr__(self) -> str:
        try:
            name = _REPR_NAMES[Status(self.status)]
        except ValueError:  # a status string from a newer version: show it as it is
            name = self.status
        details = ", ".join(_repr_details(self))
        return f"WorkflowStatus::{name}({details})" if details else f"WorkflowStatus::{name}"


# Bookkeeping left out of repr: the state's own details are what a reader looks for.
_REPR_SKIPPED = frozenset({"status", "created_at", "updated_at", "definition_hash"})


def _repr_details(status: WorkflowStatus) -> list[str]:
    details = []
    for item in fields(status):
        value = getattr(status, item.name)
        if not item.repr or item.name in _REPR_SKIPPED or value is None:
            continue
        if item.name == "error":
            value = value.partition("\n")[0]  # the traceback is in status.error itself
        elif isinstance(value, datetime):
            value = value.isoformat()
        details.append(f"{item.name}={value!r}")
    return details
