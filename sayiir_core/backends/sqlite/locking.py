"""SQLite's locks: retry what SQLite refuses without waiting, and say what happened.

SQLite's own ``busy_timeout`` is kept at 0 on our connections: a call tried on the
event loop's thread (``connection.ConnectionThread.call``'s ``try_here``) must be refused
at once rather than wait for another connection's lock. Waiting happens on the
connection's thread: ``retry_while_busy`` retries a refusal, and from the second try lets
SQLite wait for the time left. That also covers the refusals SQLite answers at once
whatever its timeout (a read transaction asking for the write lock, switching a file to
WAL, another process recovering or resetting the WAL), which processes opening a new
file together hit. So ``busy_timeout`` bounds the whole operation however SQLite
reported the lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sayiir_core.backends.sqlite.connection import WouldWait
from sayiir_core.backends.sqlite.statements import rollback
from sayiir_core.errors import BackendError

T = TypeVar("T")

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# First pause after a refusal, and the longest one: short enough to follow a lock
# held for a millisecond, long enough not to spin against a process holding it.
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.05


class StillLocked(sqlite3.OperationalError):
    """SQLite kept refusing for lack of a lock until the deadline passed."""

    def __init__(self, cause: sqlite3.Error, *, waited: float, attempts: int, doing: str) -> None:
        super().__init__(str(cause))
        self.waited = waited
        self.attempts = attempts
        self.doing = doing


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included: another holder's lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def retry_while_busy(
    conn: sqlite3.Connection,
    attempt: Callable[[], T],
    *,
    busy_timeout: float,
    deadline: float | None = None,
    doing: str = "",
) -> T:
    """Run ``attempt()``; while it fails for a lock, retry until the deadline.

    ``attempt`` must leave nothing behind when it fails (a transaction rolled back).
    ``deadline`` (``time.monotonic()``) defaults to ``busy_timeout`` from now. Each retry
    narrows the connection's busy handler to the time left, so a retry that does wait
    cannot overrun the deadline. ``doing`` names the step for the error message.
    """
    started = time.monotonic()
    if deadline is None:
        deadline = started + busy_timeout
    attempts = 1
    pause = _FIRST_PAUSE
    narrowed = False
    try:
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline - now < _FIRST_PAUSE:
                    waited = now - started
                    raise StillLocked(exc, waited=waited, attempts=attempts, doing=doing) from exc
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _LONGEST_PAUSE)
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            conn.execute(f"PRAGMA busy_timeout = {left_ms}")
            narrowed = True
            attempts += 1
    finally:
        if narrowed:
            conn.execute("PRAGMA busy_timeout = 0")


def transact(
    conn: sqlite3.Connection,
    transaction: Callable[[sqlite3.Connection], T],
    *,
    begin: str | None,
    path: Path,
    action: str,
    busy_timeout: float,
    wait: bool = True,
) -> T:
    """``transaction(conn)`` inside ``begin`` ... ``COMMIT`` (or none), on ``conn``'s thread.

    Any exception rolls back. A refusal for a lock is retried until ``busy_timeout``
    (a rolled-back attempt leaves nothing behind), or with ``wait=False`` raises
    ``WouldWait`` at once; ``sqlite3`` errors surface as ``BackendError`` naming the
    file and ``action``.
    """

    def attempt() -> T:
        if begin is not None:
            conn.execute(begin)
        try:
            result = transaction(conn)
            if begin is not None:
                conn.execute("COMMIT")
        except BaseException as exc:
            rollback(conn, exc)
            raise
        return result

    try:
        if wait:
            return retry_while_busy(conn, attempt, busy_timeout=busy_timeout)
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise WouldWait from exc
            raise
    except sqlite3.Error as exc:
        raise backend_error(path, action, exc, busy_timeout) from exc


def backend_error(path: Path, action: str, exc: sqlite3.Error, busy_timeout: float) -> BackendError:
    """A ``BackendError`` naming the file, the action and, for locks, what really happened."""
    text = str(exc)
    if "not a database" in text:
        return BackendError(f"{path} is not a SQLite database ({text})")
    if isinstance(exc, StillLocked):
        during = f" while {exc.doing}" if exc.doing else ""
        if busy_timeout == 0:
            text += f"{during}; busy_timeout=0s, so nothing waited for the other connection"
        else:
            text += (
                f"{during}; still locked after {exc.waited:.1f}s of waiting and "
                f"{exc.attempts} attempt(s): another connection held the lock longer than "
                f"busy_timeout={busy_timeout:g}s"
            )
    elif is_busy(exc):
        text += f" (busy_timeout={busy_timeout:g}s)"
    return BackendError(f"SQLite database {path}: {action} failed: {text}")
