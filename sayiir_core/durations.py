"""Durations written as numbers of seconds, ``timedelta`` or strings like ``"5m"``."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$", re.IGNORECASE)
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

Duration = str | float | int | timedelta


def parse_duration(value: Duration) -> float:
    """Return ``value`` in seconds.

    >>> parse_duration("1.5s"), parse_duration("5m"), parse_duration(2)
    (1.5, 300.0, 2.0)
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise TypeError(f"invalid duration {value!r}: expected seconds, a timedelta or '30s'")
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float, such as 10**400
            raise ValueError(
                f"invalid duration {value!r}: too large to be a number of seconds"
            ) from None
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"invalid duration {value!r}: expected a number of seconds or a string "
                "like '100ms', '30s', '5m', '2h', '1d'"
            )
        seconds = float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2).lower()]
    else:
        raise TypeError(f"invalid duration {value!r}: expected seconds, a timedelta or '30s'")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds
