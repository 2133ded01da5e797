"""The durable state of one workflow instance, as the machine sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sayiir_core.status import Status

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an instance failed, in a form that survives storage.

    ``kind`` tells which typed exception to raise for it: ``task``, ``timeout``,
    ``serialization``, ``signal_timeout`` or ``workflow`` (a structural problem such as a
    route key without a branch).
    """

    error_type: str
    message: str
    task_id: str | None = None
    kind: str = "task"

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_type": self.error_type,
            "message": self.message,
            "task_id": self.task_id,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorInfo:
        return cls(data["error_type"], data["message"], data.get("task_id"), data["kind"])


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything needed to continue an instance after a crash.

    ``results`` maps step keys to checkpointed outputs: task ids, ``body#3`` for loop
    iterations, ``fn[7]`` for map items, delay and signal ids. ``attempts`` counts failed
    attempts of steps not yet completed, ``retry_at`` holds their back-off due times, and
    ``timers`` the wake-up times of delays and the deadlines of signal waits (seconds
    since the epoch).
    """

    input: Any
    status: Status = Status.RUNNING
    results: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    attempts: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    retry_at: Mapping[str, float] = field(default_factory=lambda: EMPTY)
    timers: Mapping[str, float] = field(default_factory=lambda: EMPTY)
    output: Any = None
    error: ErrorInfo | None = None

    def control_state(self) -> dict[str, Any]:
        """The small, non-checkpoint part of the state, as stored beside the instance."""
        return {
            "attempts": dict(self.attempts),
            "retry_at": dict(self.retry_at),
            "timers": dict(self.timers),
        }
