"""``parse_duration``: seconds, ``timedelta`` and strings like ``"5m"``."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sayiir_core.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("0s", 0.0),
        (" 5 S ", 5.0),
        ("10M", 600.0),
        ("250MS", 0.25),
    ],
)
def test_strings_are_parsed_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (2, 2.0), (1.25, 1.25), (timedelta(minutes=2, seconds=3), 123.0)],
)
def test_numbers_and_timedeltas_are_seconds(value: float | timedelta, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize("text", ["", "5", "five seconds", "5 minutes", "-5s", "5w", "1.s", "s"])
def test_malformed_strings_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5, timedelta(seconds=-1)])
def test_negative_durations_are_rejected(value: float | timedelta) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    # NaN would slip through a "< 0" check; infinity cannot be stored as a JSON timer.
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False, None, [5], {"s": 5}])
def test_other_types_are_rejected(value: object) -> None:
    with pytest.raises(TypeError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_float_seconds_round_trip(seconds: float) -> None:
    assert parse_duration(seconds) == seconds
    assert parse_duration(timedelta(seconds=seconds)) == pytest.approx(seconds, abs=1e-6)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_integer_strings_scale_by_unit(amount: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{amount}{unit}") == pytest.approx(amount * scale)


@pytest.mark.parametrize("value", [10**400, -(10**400), "1" + "0" * 400 + "s"])
def test_numbers_too_large_for_seconds_are_a_value_error(value: int | str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)
