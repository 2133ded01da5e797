"""The durable state of one workflow instance, as the machine sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sayiir_core.machine.checkpoints import Checkpoints
from sayiir_core.status import ErrorInfo, Status

EMPTY: Mapping[str, Any] = MappingProxyType({})

# ErrorInfo lives in sayiir_core.status (it imports nothing of the package); it is
# re-exported here because a snapshot carries one.
__all__ = ["EMPTY", "Checkpoints", "ErrorInfo", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything needed to continue an instance after a crash.

    ``results`` maps step keys to checkpointed outputs: task ids, ``body#3`` for loop
    iterations, ``fn[7]`` for map items, delay and signal ids; any mapping may be given,
    it is kept as ``Checkpoints`` (which grows in O(1)). ``attempts`` counts failed
    attempts of steps not yet completed, ``retry_at`` holds their back-off due times, and
    ``timers`` the wake-up times of delays and the deadlines of signal waits (seconds
    since the epoch).
    """

    input: Any
    status: Status = Status.RUNNING
    results: Mapping[str, Any] = field(default_factory=Checkpoints)
    attempts: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    retry_at: Mapping[str, float] = field(default_factory=lambda: EMPTY)
    timers: Mapping[str, float] = field(default_factory=lambda: EMPTY)
    output: Any = None
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.results, Checkpoints):
            object.__setattr__(self, "results", Checkpoints(self.results))

    def results_added_since(self, before: Snapshot) -> list[str]:
        """The keys of the results added since ``before``, in the order they were added.

        O(new keys) when ``before`` is an earlier snapshot of the same run, as a driver's
        previous snapshot is.
        """
        results = self.results
        assert isinstance(results, Checkpoints)  # __post_init__ made it one
        return results.keys_added_since(before.results)

    def control_state(self) -> dict[str, Any]:
        """The small, non-checkpoint part of the state, as stored beside the instance."""
        return {
            "attempts": dict(self.attempts),
            "retry_at": dict(self.retry_at),
            "timers": dict(self.timers),
        }
