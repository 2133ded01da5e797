"""The pure state machine: ``advance(workflow, snapshot, event) -> (snapshot, commands)``."""

from sayiir_core.machine.advance import advance, start
from sayiir_core.machine.checkpoints import Checkpoints
from sayiir_core.machine.commands import AwaitSignal, Command, Complete, Fail, RunTask, WakeAt
from sayiir_core.machine.events import (
    CancelRequested,
    Event,
    PauseRequested,
    SignalReceived,
    SignalTimedOut,
    TaskCompleted,
    TaskFailed,
    Tick,
    Unpaused,
)
from sayiir_core.machine.frontier import FrontierCache
from sayiir_core.machine.keys import loop_iteration_key, map_item_key, task_id_of_key
from sayiir_core.machine.state import Snapshot
from sayiir_core.status import ErrorInfo

__all__ = [
    "AwaitSignal",
    "CancelRequested",
    "Checkpoints",
    "Command",
    "Complete",
    "ErrorInfo",
    "Event",
    "Fail",
    "FrontierCache",
    "PauseRequested",
    "RunTask",
    "SignalReceived",
    "SignalTimedOut",
    "Snapshot",
    "TaskCompleted",
    "TaskFailed",
    "Tick",
    "Unpaused",
    "WakeAt",
    "advance",
    "loop_iteration_key",
    "map_item_key",
    "start",
    "task_id_of_key",
]
