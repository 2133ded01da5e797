"""Codecs turn step inputs and outputs into bytes for storage (JSON by default)."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Codec(Protocol):
    """Encodes values to bytes and back. Implementations must be thread-safe."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Raise ``TypeError`` or ``ValueError`` for values it cannot encode."""
        ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    """Strict JSON: no NaN, no pickle, keys must be strings; the default codec."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
        )

    def encode(self, value: Any) -> bytes:
        return self._encoder.encode(value).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


DEFAULT_CODEC: Codec = JsonCodec()
