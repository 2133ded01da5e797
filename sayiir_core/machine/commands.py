"""Commands the machine asks its driver to carry out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from sayiir_core.status import ErrorInfo
from sayiir_core.workflow.graph import TaskNode


@dataclass(frozen=True, slots=True)
class RunTask:
    """Run ``task`` on ``input``; ``attempt`` is 1 for the first try."""

    key: str
    task: TaskNode
    input: Any
    attempt: int


@dataclass(frozen=True, slots=True)
class AwaitSignal:
    """Deliver the oldest buffered ``signal_name`` signal as ``SignalReceived(key)``."""

    key: str
    signal_name: str
    deadline: float | None


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Nothing for ``key`` can happen before ``when``; send a ``Tick`` then."""

    key: str
    when: float
    reason: Literal["retry", "delay", "signal_timeout"]


@dataclass(frozen=True, slots=True)
class Complete:
    output: Any


@dataclass(frozen=True, slots=True)
class Fail:
    error: ErrorInfo


Command: TypeAlias = RunTask | AwaitSignal | WakeAt | Complete | Fail
