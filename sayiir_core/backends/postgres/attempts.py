"""One try of a ``Session.run`` operation, and how an in-doubt write is settled.

``Attempt`` tracks whether a write reached the wire (so a lost connection leaves it in
doubt); ``settle_on`` makes sure the server process that ran it has finished before
anyone reads whether it was applied; ``Done`` is a ``resolve`` callback's answer when
it was.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import asyncpg

from sayiir_core.errors import BackendError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")
# Server errors that mean "this connection is gone or not yet possible", not "your SQL
# failed": admin_shutdown / crash_shutdown / cannot_connect_now (class 57P) and the
# whole connection_exception class 08.
_LOST_SERVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)
# How long settle waits for the server process that ran an in-doubt write to exit.
SETTLE_TIMEOUT_MS = 5_000


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """``resolve``'s answer when the in-doubt write was applied: ``value`` is its result."""

    value: T


class Attempt:
    """One try of an operation on one connection; tracks whether a write is in doubt."""

    __slots__ = ("in_doubt", "pid", "statement")

    def __init__(self) -> None:
        self.pid: int | None = None
        self.in_doubt = False
        self.statement = ""

    async def write(self, conn: Conn, statement: str, *args: Any) -> list[Any]:
        """Run one autocommit write; from here on a lost connection leaves it in doubt."""
        self.in_doubt, self.statement = True, statement
        return list(await conn.fetch(statement, *args))

    @asynccontextmanager
    async def transaction(self, conn: Conn) -> Any:
        """A transaction that is in doubt only once its ``COMMIT`` is on the wire."""
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield
        except BaseException:
            # On a dead connection the rollback fails too; the server rolls back anyway.
            with suppress(Exception):
                await transaction.rollback()
            raise
        self.in_doubt, self.statement = True, "COMMIT"
        await transaction.commit()


async def settle_on(conn: Conn, attempt: Attempt) -> None:
    """Make sure the server process that ran the in-doubt write has finished it.

    The client losing its connection does not stop the server: the statement may
    still be running (e.g. waiting for a row lock) and commit after we look. So if
    that process is still active on our statement, terminate it and wait (PostgreSQL
    14+ ``pg_terminate_backend(pid, timeout)``); an idle or exited process has
    committed or rolled back already. Matching the statement text as well as the
    pid guards against a recycled pid.
    """
    terminated = await conn.fetchval(
        """
        SELECT bool_and(pg_terminate_backend(pid, $3))
        FROM pg_stat_activity
        WHERE pid = $1 AND state = 'active' AND usename = current_user
          AND left(query, 120) = left($2, 120)
        """,
        attempt.pid,
        attempt.statement,
        SETTLE_TIMEOUT_MS,
    )
    if terminated is False:
        raise BackendError(
            f"the server process {attempt.pid} still runs an interrupted write after "
            f"{SETTLE_TIMEOUT_MS} ms"
        )


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (so the operation may be retried)."""
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, (OSError, *_LOST_SERVER_ERRORS)):
        return True
    # "connection is closed" / "connection was closed in the middle of operation";
    # other InterfaceErrors (e.g. "another operation is in progress") are bugs.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
