"""What the runner asks about a machine transition: which steps are busy, whether the
snapshot changed, which step an event is about, how urgent the next steps are."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from sayiir_core.machine import (
    Command,
    Event,
    RunTask,
    SignalReceived,
    Snapshot,
    TaskCompleted,
    TaskFailed,
)

DEFAULT_PRIORITY = 3


class BusySteps(Collection[str]):
    """A live view of the runner's busy steps' keys, without copying them on every step."""

    def __init__(
        self,
        running: Mapping[str, object],
        finished: Mapping[str, object],
        dispatched: Mapping[str, object],
    ) -> None:
        self._running = running
        self._finished = finished
        self._dispatched = dispatched

    def __contains__(self, key: object) -> bool:
        # Spelled out rather than any(...): the machine asks this for every ready step.
        return key in self._running or key in self._finished or key in self._dispatched

    def __iter__(self) -> Iterator[str]:
        yield from self._running
        yield from (key for key in self._finished if key not in self._running)
        yield from (
            key
            for key in self._dispatched
            if key not in self._running and key not in self._finished
        )

    def __len__(self) -> int:
        return sum(1 for _ in self)


def changed(before: Snapshot, after: Snapshot) -> bool:
    """Whether a transition changed anything a write would store."""
    return (
        after.status is not before.status
        or len(after.results) != len(before.results)
        or after.attempts != before.attempts
        or after.retry_at != before.retry_at
        or after.timers != before.timers
    )


# A tuple made once: ``A | B`` in the call would build a union object on every event.
_KEYED_EVENTS = (TaskCompleted, TaskFailed, SignalReceived)


def event_key(event: Event) -> str | None:
    """The step an event is about (a step's outcome, a signal), else ``None``."""
    return event.key if isinstance(event, _KEYED_EVENTS) else None


def next_priority(commands: list[Command]) -> int | None:
    """The most urgent ``@task(priority=)`` (1 first, default 3) of the steps to run next."""
    priorities = [
        command.task.metadata.priority or DEFAULT_PRIORITY
        for command in commands
        if isinstance(command, RunTask)
    ]
    return min(priorities) if priorities else None
