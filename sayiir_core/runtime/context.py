"""``get_task_context()``: what a running task can know about itself."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sayiir_core.workflow.task import TaskMetadata


@dataclass(frozen=True, slots=True)
class TaskExecutionContext:
    """The running step's identity.

    ``idempotency_key`` is the same for every attempt of one step of one instance (and
    differs between steps, loop iterations and map items): pass it to payment APIs and
    other side effects so that an attempt re-run after a crash is not applied twice.
    """

    workflow_id: str
    instance_id: str
    task_id: str
    step_key: str
    attempt: int
    metadata: TaskMetadata
    workflow_metadata: Mapping[str, Any] | None

    @property
    def idempotency_key(self) -> str:
        digest = hashlib.sha256(
            f"{self.workflow_id}\x00{self.instance_id}\x00{self.step_key}".encode()
        ).hexdigest()
        return f"sayiir-{digest[:32]}"


_current: ContextVar[TaskExecutionContext | None] = ContextVar("sayiir_task", default=None)


def get_task_context() -> TaskExecutionContext | None:
    """The context of the task running in this thread or coroutine; ``None`` outside one."""
    return _current.get()


def set_task_context(context: TaskExecutionContext | None) -> None:
    _current.set(context)
