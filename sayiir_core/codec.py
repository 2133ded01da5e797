"""Codecs turn step inputs and outputs into bytes for storage (JSON by default).

``JsonCodec`` encodes and decodes with orjson, which is several times faster than the
standard library on large payloads, and hands every value orjson would treat
differently to the standard library, so that what is stored and read back is exactly
what strict stdlib JSON gives: integers beyond 64 bits, non-string keys, subclasses of
built-in types, NaN and infinities (refused), too deep or circular values (refused).
"""

from __future__ import annotations

import enum
import json
import uuid
from typing import Any, Protocol, runtime_checkable

import orjson


@runtime_checkable
class Codec(Protocol):
    """Encodes values to bytes and back. Implementations must be thread-safe."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Raise ``TypeError`` or ``ValueError`` for values it cannot encode."""
        ...

    def decode(self, data: bytes) -> Any: ...


# Subclasses, dataclasses and datetimes go to _refuse, so the standard library decides.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
# orjson reads integers that do not fit in 64 bits as floats; 19 digits in a row may be
# one of them (or part of a string or a fraction: those only take the slower road).
# Mapping every digit to 0 and looking for nineteen 0s is ten times faster than a regex.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


class JsonCodec:
    """Strict JSON: no NaN or infinities, no pickle; the default codec.

    Tuples come back as lists and non-string keys (``1``, ``None``) as strings. UUIDs
    are stored as their string and enums as their value, and come back as those.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
            # Self-reference ends in RecursionError, reported below; the check costs
            # a third of the encoding time of every large payload.
            check_circular=False,
            default=_plain_value,
        )

    def encode(self, value: Any) -> bytes:
        try:
            data = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
        except TypeError:
            return self._encode_strictly(value)
        if b"null" in data:
            # orjson writes NaN and infinities as null, where strict JSON refuses them.
            return self._encode_strictly(value)
        return data

    def decode(self, data: bytes | memoryview) -> Any:
        # Database drivers may hand back a memoryview; json.loads refuses one.
        data = bytes(data)
        if _NINETEEN_DIGITS not in data.translate(_DIGITS_TO_ZERO):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # not written by this codec (NaN tokens, say): the stdlib decides
        return json.loads(data)

    def _encode_strictly(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode()
        except RecursionError:
            raise ValueError("the value refers to itself or is nested too deeply") from None


def _refuse(value: Any) -> Any:
    raise TypeError(f"left to the standard library: {type(value).__name__}")


def _plain_value(value: Any) -> Any:
    """What the standard library encodes for the types orjson encodes natively."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


DEFAULT_CODEC: Codec = JsonCodec()
