"""Storage backends: the ``Backend`` protocol, its records and the shipped backends.

``InMemoryBackend`` for tests and prototypes, ``SqliteBackend`` for one machine (or a few
processes sharing a file), ``PostgresBackend`` for a fleet; ``backend_from_url`` picks
one from a URL. ``OpensAndCloses`` gives a backend ``async with``. The optional step
queue (``StepQueue`` and its records) lets idle workers run an instance's ready steps;
``AdvanceQueue`` (from ``advance_queue``) is its two atomic writes for a dispatcher.
"""

from __future__ import annotations

from sayiir_core.backends.base import (
    Backend,
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
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.notify import FinishWatch
from sayiir_core.backends.sqlite import SqliteBackend
from sayiir_core.backends.step_queue import (
    AdvanceQueue,
    ClaimedStep,
    StepQueue,
    StepRef,
    StepResult,
    StepTicket,
    advance_queue,
)
from sayiir_core.backends.url import backend_from_url

__all__ = [
    "AdvanceQueue",
    "Backend",
    "BufferedSignal",
    "Claim",
    "ClaimedStep",
    "ConflictPolicy",
    "ControlRequest",
    "FinishWatch",
    "HistoryEvent",
    "InMemoryBackend",
    "InstancePage",
    "InstanceRecord",
    "LoadedInstance",
    "NewInstance",
    "OpensAndCloses",
    "SqliteBackend",
    "StepQueue",
    "StepRef",
    "StepResult",
    "StepTicket",
    "StepWrite",
    "advance_queue",
    "backend_from_url",
]
