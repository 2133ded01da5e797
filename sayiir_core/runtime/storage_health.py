"""One log line per change of the storage's health, not one traceback per poll.

During a database outage a worker's loops (claiming, shared steps) fail every poll;
logging each failure with its traceback wrote hundreds of lines for a two-second
outage. ``StorageHealth`` logs when storage is lost (one line, the error's type and
message), when it is back (with how long it was gone), and nothing in between.
"""

from __future__ import annotations

import logging
import time

from sayiir_core.runtime.executor import safe_str


class StorageHealth:
    """Tracks whether the last storage call of ``what`` worked; logs only the changes."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._lost_at: float | None = None
        self.failures = 0

    @property
    def is_lost(self) -> bool:
        return self._lost_at is not None

    def failed(self, error: BaseException) -> None:
        """A call failed: logged (one line, no traceback) only if storage was fine before."""
        self.failures += 1
        if self._lost_at is not None:
            self._logger.debug("%s: still failing: %s", self._what, safe_str(error))
            return
        self._lost_at = time.monotonic()
        self._logger.warning(
            "%s: storage unreachable (%s: %s); retrying until it answers",
            self._what,
            type(error).__name__,
            one_line(safe_str(error)),
        )

    def worked(self) -> None:
        """A call worked: logged only if storage had been lost."""
        if self._lost_at is None:
            return
        gone = time.monotonic() - self._lost_at
        self._lost_at = None
        self._logger.warning("%s: storage is back after %.1fs", self._what, gone)


def one_line(text: str) -> str:
    first, _, rest = text.strip().partition("\n")
    return f"{first} …" if rest else first
