"""``PoolOptions``: Sayiir 1.0's ``PostgresBackend`` keywords as asyncpg pool settings.

Sayiir 1.0 (sqlx underneath) takes ``max_connections``, ``min_connections``,
``acquire_timeout_secs``, ``idle_timeout_secs``, ``max_lifetime_secs``,
``statement_timeout_secs`` and ``idle_in_transaction_session_timeout_secs``, all
defaulting to ``None`` = "the library's default". The defaults below are Sayiir 1.0's
(``sayiir-postgres``: 20 and 2 connections; sqlx: 30 s, 10 min, 30 min; the two server
timeouts left to the server). How each is honoured here:

* ``max_connections`` / ``min_connections``: the pool's ``max_size`` / ``min_size``
  (the LISTEN connections come on top, see ``PostgresBackend``).
* ``acquire_timeout_secs``: how long an operation waits for a pooled connection
  (``Pool.acquire(timeout=...)``), then fails with ``BackendError``.
* ``idle_timeout_secs``: asyncpg's ``max_inactive_connection_lifetime``: a pooled
  connection idle that long is closed (down to ``min_connections``).
* ``max_lifetime_secs``: a pooled connection older than this is never handed out
  again: it is closed when next acquired and a new one takes its place (so an idle
  connection past its age lives on, unused, until then or until ``idle_timeout``).
  LISTEN connections are not recycled: they are long-lived sessions by design.
* ``statement_timeout_secs`` / ``idle_in_transaction_session_timeout_secs``: the
  server settings of the same names, in the startup packet of every connection
  (pooled and LISTEN), so they cost no round trip.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["PoolOptions", "RecycledConnection", "StaleConnectionError"]

DEFAULT_MAX_CONNECTIONS = 20
DEFAULT_MIN_CONNECTIONS = 2
DEFAULT_ACQUIRE_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_LIFETIME = 1800.0
# PostgreSQL keeps both timeouts as a 4-byte count of milliseconds.
_MAX_MILLISECONDS = 2**31 - 1


class StaleConnectionError(Exception):
    """Raised by the pool's ``setup`` hook for a connection past ``max_lifetime_secs``.

    asyncpg closes a connection whose ``setup`` fails and puts its slot back; the
    session then acquires again and gets a fresh connection.
    """


class RecycledConnection(asyncpg.Connection):
    """A pooled connection that knows when it was opened (for ``max_lifetime_secs``)."""

    opened_at: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened_at = time.monotonic()


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Validated pool and session limits; see the module docstring for their meaning."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    min_connections: int = DEFAULT_MIN_CONNECTIONS
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_lifetime: float = DEFAULT_MAX_LIFETIME
    statement_timeout: float | None = None
    idle_in_transaction_session_timeout: float | None = None

    @classmethod
    def from_keywords(
        cls,
        *,
        max_connections: int | None,
        min_connections: int | None,
        acquire_timeout_secs: float | None,
        idle_timeout_secs: float | None,
        max_lifetime_secs: float | None,
        statement_timeout_secs: float | None,
        idle_in_transaction_session_timeout_secs: float | None,
        max_size: int | None = None,
        min_size: int | None = None,
    ) -> PoolOptions:
        """From ``PostgresBackend``'s keywords (``max_size``/``min_size``: older names)."""
        most = _one_of("max_connections", max_connections, "max_size", max_size)
        least = _one_of("min_connections", min_connections, "min_size", min_size)
        if most is None:
            most = DEFAULT_MAX_CONNECTIONS
        _check_int("max_connections", most, minimum=1)
        if least is None:
            least = min(DEFAULT_MIN_CONNECTIONS, most)
        _check_int("min_connections", least, minimum=0)
        if least > most:
            raise ValueError(f"min_connections ({least}) must not exceed max_connections ({most})")
        return cls(
            max_connections=most,
            min_connections=least,
            acquire_timeout=_seconds("acquire_timeout_secs", acquire_timeout_secs)
            or DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout=_seconds("idle_timeout_secs", idle_timeout_secs) or DEFAULT_IDLE_TIMEOUT,
            max_lifetime=_seconds("max_lifetime_secs", max_lifetime_secs) or DEFAULT_MAX_LIFETIME,
            statement_timeout=_seconds("statement_timeout_secs", statement_timeout_secs),
            idle_in_transaction_session_timeout=_seconds(
                "idle_in_transaction_session_timeout_secs",
                idle_in_transaction_session_timeout_secs,
            ),
        )

    def server_settings(self) -> dict[str, str]:
        """The timeouts to send in every connection's startup packet, in milliseconds."""
        settings = {}
        if self.statement_timeout is not None:
            settings["statement_timeout"] = _milliseconds(self.statement_timeout)
        if self.idle_in_transaction_session_timeout is not None:
            settings["idle_in_transaction_session_timeout"] = _milliseconds(
                self.idle_in_transaction_session_timeout
            )
        return settings

    def pool_keywords(self) -> dict[str, Any]:
        """Keywords for ``asyncpg.create_pool`` (sizes, idle time, lifetime check)."""
        return {
            "min_size": self.min_connections,
            "max_size": self.max_connections,
            "max_inactive_connection_lifetime": self.idle_timeout,
            "connection_class": RecycledConnection,
            "setup": self._refuse_stale,
        }

    async def _refuse_stale(self, conn: Any) -> None:
        # Runs on every acquire with the pool's proxy, which forwards attribute reads to
        # the connection; no round trip.
        if time.monotonic() - conn.opened_at > self.max_lifetime:
            raise StaleConnectionError


def _one_of(name: str, value: int | None, old_name: str, old_value: int | None) -> int | None:
    if value is not None and old_value is not None and value != old_value:
        raise ValueError(f"{name}={value!r} and {old_name}={old_value!r} disagree; pass one")
    return value if value is not None else old_value


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a positive number of seconds, or None for the default; not {value!r}"
        )
    return float(value)


def _milliseconds(seconds: float) -> str:
    # At least 1 ms: PostgreSQL reads 0 as "no timeout", the opposite of a tiny one.
    return str(min(max(1, round(seconds * 1000)), _MAX_MILLISECONDS))
