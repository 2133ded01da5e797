"""``Checkpoints``: the results of one instance, an immutable mapping that grows in O(1).

A snapshot's results only ever grow, one key per event, and a wide ``map`` has tens of
thousands of them. Copying a dict on every event would make such a map quadratic, so
every version of the results shares one append-only log and sees only its first
``len(version)`` entries. Adding to the newest version appends to the log in place;
adding to an older version (a driver that went back to an earlier snapshot, as a crash
does) copies that version's entries into a log of its own first. Either way no version
ever changes once made, so a ``Snapshot`` stays a plain value.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class _Log:
    """Entries in the order they were added; shared by every version made from it."""

    __slots__ = ("keys", "lock", "positions", "values")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.values: list[Any] = []
        self.positions: dict[str, int] = {}
        # Two threads may both hold the newest version; only one of them may extend it.
        self.lock = threading.Lock()

    def append(self, key: str, value: Any) -> None:
        self.positions[key] = len(self.keys)
        self.keys.append(key)
        self.values.append(value)


class Checkpoints(Mapping[str, Any]):
    """Step key -> checkpointed output, in the order the checkpoints were written.

    Immutable: ``with_added`` returns a new version, in O(1) when it extends the newest.

    Example::

        empty = Checkpoints()
        one = empty.with_added("fetch", [1, 2])
        assert "fetch" in one and "fetch" not in empty
    """

    __slots__ = ("_log", "_size")

    def __init__(self, entries: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        log = _Log()
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        for key, value in pairs:
            if key in log.positions:
                raise ValueError(f"checkpoint {key!r} given twice")
            log.append(key, value)
        self._log = log
        self._size = len(log.keys)

    @classmethod
    def _version(cls, log: _Log, size: int) -> Checkpoints:
        version = cls.__new__(cls)
        version._log = log
        version._size = size
        return version

    def __getitem__(self, key: str) -> Any:
        position = self._log.positions.get(key)
        if position is None or position >= self._size:
            raise KeyError(key)
        return self._log.values[position]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        position = self._log.positions.get(key)
        return position is not None and position < self._size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        return itertools.islice(self._log.keys, self._size)

    def __repr__(self) -> str:
        return f"Checkpoints({dict(self)!r})"

    def __reduce__(self) -> tuple[type[Checkpoints], tuple[list[tuple[str, Any]]]]:
        # copy and pickle see the entries of this version, not the shared log and its lock
        return Checkpoints, (list(self.items()),)

    def with_added(self, key: str, value: Any) -> Checkpoints:
        """This version plus ``key``; ``key`` must be new."""
        if key in self:
            raise ValueError(f"checkpoint {key!r} is written already")
        log = self._log
        with log.lock:
            if len(log.keys) == self._size:
                log.append(key, value)
                return Checkpoints._version(log, self._size + 1)
        branch = Checkpoints(zip(log.keys[: self._size], log.values[: self._size], strict=True))
        return branch.with_added(key, value)

    def keys_added_since(self, older: Mapping[str, Any]) -> list[str]:
        """The keys this version has and ``older`` has not, in the order they were added.

        O(number of new keys) when ``older`` is an earlier version of this one.
        """
        if isinstance(older, Checkpoints) and older._log is self._log:
            return self._log.keys[min(older._size, self._size) : self._size]
        return [key for key in self if key not in older]
