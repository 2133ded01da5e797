"""Checks of the arguments users pass to ``@task``, ``TaskMetadata``, ``RetryPolicy``, ``Flow``.

A wrong argument is refused where it is written, with its name and what to pass instead:
accepted, it would surface later as an ``AttributeError`` deep in the engine, or as a
raw exception that leaves an instance ``running``.
"""

from __future__ import annotations

import math
from typing import Any


def describe(value: object) -> str:
    """``value`` and its type, for messages: ``'3' (str)``."""
    return f"{value!r} ({type(value).__name__})"


def check_count(value: object, name: str, *, minimum: int = 0) -> int:
    """An ``int`` (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seconds(value: object, name: str, *, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (> 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {describe(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} is too large: {value}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0, got {value}")
    return seconds


def check_number(value: object, name: str) -> float:
    """A finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def check_optional_str(value: object, name: str) -> str | None:
    """``None`` or a string."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, got {describe(value)}")
    return value


def check_name(value: object, name: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a non-empty string, got {describe(value)}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string, got ''")
    return value


def check_priority(value: object, name: str = "priority") -> int | None:
    """``None`` or an ``int`` from 1 (most urgent) to 5."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int from 1 to 5, got {describe(value)}")
    if not 1 <= value <= 5:
        raise ValueError(f"{name} must be between 1 and 5, got {value}")
    return value


def check_exception_types(value: Any, name: str) -> tuple[type[BaseException], ...]:
    """A tuple of exception classes, from a tuple, a list or one class."""
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, str) or not isinstance(value, tuple | list | set | frozenset):
        raise TypeError(
            f"{name} must be a tuple of exception classes, such as (ConnectionError,), "
            f"got {describe(value)}"
        )
    for entry in value:
        if not (isinstance(entry, type) and issubclass(entry, BaseException)):
            hint = (
                f"; pass the class itself, {entry}, not its name" if isinstance(entry, str) else ""
            )
            raise TypeError(
                f"{name} must hold exception classes (subclasses of BaseException), "
                f"got {describe(entry)}{hint}"
            )
    return tuple(value)
