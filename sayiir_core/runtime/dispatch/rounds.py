"""What one advance of ``Dispatcher`` works with: a message's fate, its own outcome,
how a round under the claim went, and the snapshot and event it starts from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sayiir_core.backends.base import ControlRequest, InstanceRecord
from sayiir_core.backends.step_queue import StepRef
from sayiir_core.machine import CancelRequested, Event, PauseRequested, Snapshot
from sayiir_core.runtime.executor import TaskOutcome
from sayiir_core.status import Status


class StepRun(StrEnum):
    """What ``Dispatcher.run_step`` did with a message."""

    RAN = "ran"
    DROPPED = "dropped"  # already running, finished, withdrawn, or its instance finished
    UNKNOWN = "unknown"  # a workflow or definition this process does not have
    LOST = "lost"  # the step's lease was taken over while it ran; that run's outcome counts


@dataclass(frozen=True, slots=True)
class OwnOutcome:
    """An outcome this process ran and holds, with the step claim that fences it."""

    ref: StepRef
    token: int
    outcome: TaskOutcome


@dataclass(frozen=True, slots=True)
class Round:
    """How one advance under the claim went."""

    lost: bool = False  # the claim was taken over: nothing after that was written
    consumed: frozenset[StepRef] = frozenset()
    look_again: bool = False  # outcomes or a request arrived while the claim was held
    held_back: bool = False  # steps queued but not sent, for the next advance to send


def control_event(record: InstanceRecord) -> Event | None:
    if record.control_request is ControlRequest.CANCEL:
        return CancelRequested()
    if record.control_request is ControlRequest.PAUSE:
        return PauseRequested()
    return None


def resumed(snapshot: Snapshot, record: InstanceRecord, before: Mapping[str, int]) -> Snapshot:
    """The snapshot to advance from: ``running`` when parked only on dispatched steps.

    Such an instance is ``waiting`` merely because nobody holds it (see ``_release`` in
    the runner); the machine would flip it back to ``running`` at once, since the steps
    still out are on its frontier, and the runner would spend a commit on that flip
    alone. Starting from ``running`` saves that round trip; every other write is the same.
    """
    if before and record.status is Status.WAITING and record.control_request is None:
        return dataclasses.replace(snapshot, status=Status.RUNNING)
    return snapshot
