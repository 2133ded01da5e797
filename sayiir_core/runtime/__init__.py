"""Everything that does I/O or keeps time, and the seams an adapter plugs into.

- **Executor seam**: ``Executor`` runs one attempt of one step (``TaskRequest`` in,
  ``TaskOutcome`` = ``TaskSuccess`` | ``TaskFailure`` out); ``LocalExecutor`` runs it in
  this process. Pass another to ``Worker(executor=...)`` or ``DurableRunner``.
- **Running**: ``Worker`` claims and runs instances; ``DurableRunner`` runs one instance
  (``run``, ``resume``, ``run_claimed`` with a ``ParkPolicy``) for code that claims on
  its own; ``run_claimed_step`` runs one step claimed from a backend's step queue.
- **Controlling**: ``InstanceControl`` submits and controls instances without running
  any (the clients are its faces).
- **Observing**: an ``EventListener`` is called with each history event once stored.
"""

from __future__ import annotations

from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.durable_runner import DurableRunner, default_owner_id
from sayiir_core.runtime.executor import (
    Executor,
    LocalExecutor,
    TaskFailure,
    TaskOutcome,
    TaskRequest,
    TaskSuccess,
)
from sayiir_core.runtime.history import EventListener
from sayiir_core.runtime.runner import DURABLE_RUN, ParkPolicy
from sayiir_core.runtime.step_runner import run_claimed_step
from sayiir_core.runtime.worker import Worker, WorkerHandle

__all__ = [
    "DURABLE_RUN",
    "DurableRunner",
    "EventListener",
    "Executor",
    "InstanceControl",
    "LocalExecutor",
    "ParkPolicy",
    "TaskFailure",
    "TaskOutcome",
    "TaskRequest",
    "TaskSuccess",
    "Worker",
    "WorkerHandle",
    "default_owner_id",
    "run_claimed_step",
]
