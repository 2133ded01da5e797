"""Events fed to the machine: what happened since the last snapshot.

Every event that needs the time carries ``now`` (seconds since the epoch) so that the
machine stays a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from sayiir_core.status import ErrorInfo


@dataclass(frozen=True, slots=True)
class Tick:
    """Start, resume, or a timer may have come due: recompute what can run."""

    now: float


@dataclass(frozen=True, slots=True)
class TaskCompleted:
    key: str
    output: Any
    now: float


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """An attempt failed. ``retryable`` is False when the policy must not retry it.

    ``jitter_sample`` in ``[0, 1)`` spreads the back-off; the runtime draws it.
    """

    key: str
    error: ErrorInfo
    retryable: bool
    now: float
    jitter_sample: float = 0.5


@dataclass(frozen=True, slots=True)
class SignalReceived:
    key: str
    payload: Any
    now: float


@dataclass(frozen=True, slots=True)
class SignalTimedOut:
    """The deadline of a signal wait passed and no buffered signal was there to take."""

    key: str
    now: float


@dataclass(frozen=True, slots=True)
class CancelRequested:
    pass


@dataclass(frozen=True, slots=True)
class PauseRequested:
    pass


@dataclass(frozen=True, slots=True)
class Unpaused:
    now: float


Event: TypeAlias = (
    Tick
    | TaskCompleted
    | TaskFailed
    | SignalReceived
    | SignalTimedOut
    | CancelRequested
    | PauseRequested
    | Unpaused
)
