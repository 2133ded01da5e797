"""The pure state machine: ``advance(workflow, snapshot, event) -> (snapshot, commands)``."""

from sayiir_core.machine.advance import (
    advance,
    loop_iteration_key,
    map_item_key,
    start,
    task_id_of_key,
)
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
from sayiir_core.machine.state import ErrorInfo, Snapshot

__all__ = [
    "AwaitSignal",
    "CancelRequested",
    "Command",
    "Complete",
    "ErrorInfo",
    "Event",
    "Fail",
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
