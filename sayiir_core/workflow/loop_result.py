"""``LoopResult``: what a loop body returns to go round again or to stop."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")

LOOP_TAG = "_loop"


class OnMax(StrEnum):
    """What a loop does when it reaches ``max_iterations``."""

    FAIL = "fail"
    EXIT_WITH_LAST = "exit_with_last"


class LoopResult(Generic[T]):
    """Return ``LoopResult.again(v)`` to iterate with ``v``, ``LoopResult.done(v)`` to exit.

    The checkpointed wire form is ``{"_loop": "again" | "done", "value": v}``.
    """

    __slots__ = ("_tag", "_value")

    def __init__(self, tag: str, value: T) -> None:
        if tag not in ("again", "done"):
            raise ValueError(f"LoopResult tag must be 'again' or 'done', got {tag!r}")
        self._tag = tag
        self._value = value

    @classmethod
    def again(cls, value: T) -> LoopResult[T]:
        return cls("again", value)

    @classmethod
    def done(cls, value: T) -> LoopResult[T]:
        return cls("done", value)

    @property
    def is_done(self) -> bool:
        return self._tag == "done"

    @property
    def is_again(self) -> bool:
        return self._tag == "again"

    @property
    def value(self) -> T:
        return self._value

    def to_dict(self) -> dict[str, Any]:
        return {LOOP_TAG: self._tag, "value": self._value}

    @classmethod
    def from_wire(cls, wire: Any) -> LoopResult[Any] | None:
        """Parse the wire form; ``None`` if ``wire`` is not one."""
        if isinstance(wire, LoopResult):
            return wire
        if isinstance(wire, dict) and wire.get(LOOP_TAG) in ("again", "done") and "value" in wire:
            return cls(wire[LOOP_TAG], wire["value"])
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoopResult):
            return NotImplemented
        return (self._tag, self._value) == (other._tag, other._value)

    def __hash__(self) -> int:
        return hash(self._tag)

    def __repr__(self) -> str:
        return f"LoopResult.{self._tag}({self._value!r})"
