"""``JsonCodec`` stores and reads back exactly what strict standard-library JSON does.

It runs on orjson for speed and defers to the standard library wherever the two differ;
these tests hold it to the standard library's verdict, value for value.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sayiir_core.codec import JsonCodec

CODEC = JsonCodec()
STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def strict_round_trip(value: Any) -> Any:
    return json.loads(STRICT.encode(value).encode())


scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats()
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children) | st.tuples(children, children) | st.dictionaries(keys, children)
    ),
    max_leaves=30,
)


@given(values)
def test_any_json_value_reads_back_as_with_the_standard_library(value: Any) -> None:
    try:
        expected = strict_round_trip(value)
    except (TypeError, ValueError) as refusal:  # a lone surrogate, an infinite key...
        with pytest.raises(type(refusal)):
            CODEC.encode(value)
        return
    assert CODEC.decode(CODEC.encode(value)) == expected


@given(st.integers(min_value=2**63 - 10, max_value=2**90) | st.integers(max_value=-(2**63)))
def test_integers_beyond_64_bits_stay_exact(number: int) -> None:
    assert CODEC.decode(CODEC.encode({"n": number})) == {"n": number}
    assert type(CODEC.decode(CODEC.encode(number))) is int


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_even_next_to_null(number: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        CODEC.encode({"value": number, "other": None})


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="refers to itself"):
        CODEC.encode(loop)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [{1, 2}, datetime.date(2026, 1, 1), Point(1), object(), b"bytes"])
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        CODEC.encode({"value": value})


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


def test_uuids_and_enums_are_stored_as_their_json_value() -> None:
    key = uuid.UUID(int=7)
    stored = CODEC.encode({"id": key, "colour": Colour.RED, "size": Size.LARGE})
    assert CODEC.decode(stored) == {"id": str(key), "colour": "red", "size": 3}
    # The same where the standard library does the encoding (a long integer beside it).
    stored = CODEC.encode({"id": key, "colour": Colour.RED, "big": 2**80})
    assert CODEC.decode(stored) == {"id": str(key), "colour": "red", "big": 2**80}


def test_values_written_by_another_json_encoder_are_read() -> None:
    assert CODEC.decode(b'{"a": [1, 2.5, "x"], "b": NaN}')["a"] == [1, 2.5, "x"]
    assert math.isnan(CODEC.decode(b'{"b": NaN}')["b"])
    assert CODEC.decode(memoryview(b'{"n": 1}')) == {"n": 1}
