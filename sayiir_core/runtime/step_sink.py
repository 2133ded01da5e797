"""``StepSink``: where an ``InstanceRunner`` writes its steps and reads signals."""

from __future__ import annotations

from typing import Protocol

from sayiir_core.backends.base import BufferedSignal, ControlRequest, StepWrite


class StepSink(Protocol):
    """Where the runner writes its steps and reads signals."""

    async def write(self, write: StepWrite) -> ControlRequest | None: ...

    async def next_signal(self, name: str) -> BufferedSignal | None: ...

    async def pending_control(self) -> ControlRequest | None:
        """A cancel or pause asked for since the last write, if any."""
        ...


def discards_writes(sink: StepSink) -> bool:
    """True for a sink that keeps nothing (``discards_writes = True`` on it): the runner
    then builds no ``StepWrite`` (history events, control state...) for it to drop."""
    return getattr(sink, "discards_writes", False) is True
