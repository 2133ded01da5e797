"""Connections for ``PostgresBackend``: the pool, its event loop, retries, error text.

``Session.run`` is the one place a backend operation touches asyncpg. It classifies what
went wrong and decides whether the operation may run again:

* A connection that fails before the operation was sent (the pool could not connect,
  or a dead pooled connection failed inside a transaction before ``COMMIT``) changed
  nothing: retried, with back-off.
* Reads and idempotent writes (``idempotent=True``) are retried whatever happened:
  running them twice is harmless.
* A write whose connection dropped after it was sent is *in doubt*: the server may have
  applied it, may still be running it, or may have rolled it back. First the old
  server process is waited for (``settle``), so the outcome is final; then the
  operation's ``resolve`` callback reads the rows to tell which, and answers
  ``Done(value)`` (it was applied: that is the result) or ``None`` (it was not: run it
  again). A write without ``resolve`` raises ``BackendError`` saying so instead of
  risking doing it twice.

The pool belongs to one event loop and one process. After ``os.fork()`` the child's
``open()`` forgets the parent's pool without closing it (see ``backends.forks``) and
opens its own; until then every operation in the child says to call ``open()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import asyncpg

from sayiir_core.backends.forks import ProcessOwner, keep_forever
from sayiir_core.backends.postgres.address import Address
from sayiir_core.backends.postgres.options import PoolOptions, StaleConnectionError
from sayiir_core.errors import BackendError, WorkflowError

logger = logging.getLogger("sayiir.postgres")

T = TypeVar("T")
_ATTEMPTS = 4
_BACKOFF = (0.05, 0.25, 1.0)
# How long settle waits for the server process that ran an in-doubt write to exit.
_SETTLE_TIMEOUT_MS = 5_000
# Server errors that mean "this connection is gone or not yet possible", not "your SQL
# failed": admin_shutdown / crash_shutdown / cannot_connect_now (class 57P) and the
# whole connection_exception class 08.
_LOST_SERVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)

_CLOSE_TIMEOUT = 5.0  # seconds a graceful pool close may take


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """``resolve``'s answer when the in-doubt write was applied: ``value`` is its result."""

    value: T


if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What a body gets: a pooled connection proxy, or a plain connection (migrations).
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Resolve: TypeAlias = Callable[[Conn], Awaitable[Done[T] | None]]
    Body: TypeAlias = Callable[[Conn, "Attempt"], Awaitable[T]]


async def _keep_session(conn: Conn) -> None:
    """Pool ``reset`` hook that sends nothing.

    asyncpg's default reset runs ``RESET ALL; UNLISTEN *; ...`` on every release: a
    second round trip per operation. This backend never changes session state on
    pooled connections (LISTEN has its own connection, locks are transaction-level),
    and asyncpg still rolls back any open transaction before calling this hook.
    """


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


class Session:
    """An asyncpg pool bound to the event loop and process that opened it; ``run`` on top."""

    def __init__(
        self,
        url: str,
        *,
        options: PoolOptions,
        command_timeout: float | None,
        connect_timeout: float,
    ) -> None:
        if command_timeout is not None and command_timeout <= 0:
            raise ValueError(f"command_timeout must be positive or None, not {command_timeout!r}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout!r}")
        self._url = url
        self.address = Address.parse(url)
        self._connect_timeout = connect_timeout
        self.options = options
        # Sent in the startup packet, so free; shows who is who in pg_stat_activity.
        # Claims rely on READ COMMITTED (SKIP LOCKED re-checks rows at the latest
        # version); pin it so a server whose default is stricter does not fail them.
        self._settings = {"default_transaction_isolation": "read committed"}
        if "application_name" not in url:
            self._settings["application_name"] = "sayiir"
        self._settings.update(options.server_settings())
        self._pool_options: dict[str, Any] = {
            **options.pool_keywords(),
            "command_timeout": command_timeout,
            "timeout": connect_timeout,
            "reset": _keep_session,
            "server_settings": self._settings,
        }
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Task[None] | None = None
        self._owner = ProcessOwner()
        self._fork_hooks: list[Callable[[], None]] = []

    def on_fork(self, drop_inherited: Callable[[], None]) -> None:
        """Have ``drop_inherited`` forget its own connections when this process drops a
        parent's pool (the LISTEN connections)."""
        self._fork_hooks.append(drop_inherited)

    def adopt(self) -> None:
        """In a forked child: forget every connection the parent made, sending nothing."""
        self._owner.claim(self._drop_inherited)

    def _drop_inherited(self) -> None:
        # Not closed, not terminated: the parent still uses these sockets (a Terminate
        # would end its sessions) and its loop's epoll set (unregistering a socket from
        # it here would deafen the parent). Kept referenced so no finaliser does either.
        keep_forever(self._pool, self._opening, self._loop)
        self._pool, self._opening, self._loop = None, None, None
        self._guard = threading.Lock()  # another thread may have held it at the fork
        for drop_inherited in self._fork_hooks:
            drop_inherited()

    async def connect(self) -> asyncpg.Connection:
        """A dedicated connection outside the pool (for LISTEN)."""
        try:
            return await asyncpg.connect(
                self._url, timeout=self._connect_timeout, server_settings=self._settings
            )
        except Exception as exc:
            raise self.connect_error(exc) from None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    async def open(self, setup: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
        """Create the pool and run ``setup`` (migrations) once; safe to call concurrently."""
        loop = asyncio.get_running_loop()
        self.adopt()
        with self._guard:
            if self._loop is not None and self._loop is not loop:
                if not self._loop.is_closed():
                    raise self.wrong_loop()
                # Opened by an event loop that is gone (asyncio.run returned without
                # close()): its pool is unusable; drop it and open on this loop.
                if self._pool is not None:
                    abandon(self._pool)
                self._pool, self._opening, self._loop = None, None, None
            if self._pool is not None:
                return
            if self._opening is None:
                self._loop = loop
                self._opening = loop.create_task(self._open(setup))
            opening = self._opening
        try:
            # Shielded: one caller giving up does not cancel the open the others await.
            await asyncio.shield(opening)
        except BaseException:
            with self._guard:
                if self._opening is opening and opening.done():
                    self._opening, self._loop = None, None
            raise

    async def _open(self, setup: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
        try:
            pool = await asyncpg.create_pool(self._url, **self._pool_options)
        except Exception as exc:
            raise self.connect_error(exc) from None
        try:
            await setup(pool)
        except BaseException:
            pool.terminate()
            raise
        with self._guard:
            self._pool = pool

    def check_closable(self) -> None:
        """Refuse to close from a foreign loop that is still running (not thread-safe)."""
        if self._owner.moved_on:
            return  # close() only forgets what a parent process opened
        loop = self._loop
        if loop is not None and not loop.is_closed() and loop is not asyncio.get_running_loop():
            raise self.wrong_loop()

    async def close(self) -> None:
        if self._owner.moved_on:
            self.adopt()
            return
        self.check_closable()
        with self._guard:
            opening = self._opening
        if opening is not None and not opening.done():
            # Let a concurrent open finish, or its pool would appear after the close.
            with suppress(Exception):
                await asyncio.shield(opening)
        with self._guard:
            pool, loop = self._pool, self._loop
            self._pool, self._opening, self._loop = None, None, None
        if pool is None:
            return
        if loop is asyncio.get_running_loop():
            try:
                # A graceful close waits for the server to confirm; over a dead network
                # that never comes, so give up after a while and drop the sockets.
                await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()
        else:
            abandon(pool)  # its loop is closed: nothing can be awaited on it any more

    def wrong_loop(self) -> BackendError:
        return BackendError(
            f"PostgresBackend ({self.address}) was opened on another event loop; an "
            "asyncpg pool only works on the loop that created it. Use one backend object "
            "per event loop: the sync API and Worker.start() share one loop thread per "
            "process; an asyncio app uses its own backend with AsyncWorkflowClient and "
            "`await worker.run(...)`"
        )

    def forked(self) -> BackendError:
        return BackendError(
            f"PostgresBackend ({self.address}) was set up in process {self._owner.pid}, "
            f"and this is process {os.getpid()} (forked since): call open() here first. "
            "Connections cannot be shared across processes; open() forgets the parent's "
            "without disturbing them and connects anew"
        )

    def connect_error(self, exc: BaseException) -> BackendError:
        detail = self.address.scrub(f"{type(exc).__name__}: {exc}")
        return BackendError(f"cannot connect to PostgreSQL at {self.address}: {detail}")

    def pool(self) -> asyncpg.Pool:
        if self._owner.moved_on:
            raise self.forked()
        pool, loop = self._pool, self._loop
        if pool is None:
            raise BackendError(f"PostgresBackend ({self.address}) is not open; call open() first")
        if loop is not asyncio.get_running_loop():
            raise self.wrong_loop()
        return pool

    async def run(
        self,
        action: str,
        body: Body[T],
        *,
        idempotent: bool = False,
        resolve: Resolve[T] | None = None,
    ) -> T:
        """Run ``body`` on a pooled connection, retrying what is safe to retry."""
        pool = self.pool()
        for number in range(_ATTEMPTS):
            attempt = Attempt()
            try:
                # self.connection(...) spelled out: this is every statement's path.
                conn = await self._acquire(pool, action)
                try:
                    attempt.pid = conn.get_server_pid()
                    return await body(conn, attempt)
                finally:
                    await pool.release(conn, timeout=self.options.acquire_timeout)
            except TimeoutError as exc:
                # command_timeout: asyncpg cancels the statement. Not retried (the server
                # is slow, not gone), but an in-doubt write still learns what happened.
                if attempt.in_doubt and resolve is not None:
                    done = await self._resolve(pool, action, attempt, resolve, exc)
                    if done is not None:
                        return done.value
                    raise self.failure(action, exc) from exc
                raise self.failure(action, exc, doubtful=attempt.in_doubt) from exc
            except Exception as exc:
                if not _connection_lost(exc):
                    if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                        raise self.failure(action, exc) from exc
                    raise
                last = number == _ATTEMPTS - 1
                if attempt.in_doubt and not idempotent:
                    if resolve is None:
                        await self._settle(pool, attempt)
                        raise self.failure(action, exc, doubtful=True) from exc
                    done = await self._resolve(pool, action, attempt, resolve, exc)
                    if done is not None:
                        return done.value
                if last:
                    raise self.failure(action, exc) from exc
                logger.warning(
                    "PostgreSQL %s: %s lost its connection (%s); retrying",
                    self.address,
                    action,
                    self.address.scrub(str(exc)) or type(exc).__name__,
                )
                await asyncio.sleep(_BACKOFF[min(number, len(_BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _resolve(
        self,
        pool: asyncpg.Pool,
        action: str,
        attempt: Attempt,
        resolve: Resolve[T],
        cause: BaseException,
    ) -> Done[T] | None:
        """Wait until the in-doubt write is final, then ask ``resolve`` whether it applied."""
        for number in range(_ATTEMPTS):
            try:
                async with self.connection(pool, action) as conn:
                    await self._settle_on(conn, attempt)
                    return await resolve(conn)
            except WorkflowError:
                raise  # resolve's own verdict, e.g. LeaseLostError
            except Exception as exc:
                if not _connection_lost(exc) or number == _ATTEMPTS - 1:
                    raise self.failure(action, cause, doubtful=True) from exc
                await asyncio.sleep(_BACKOFF[min(number, len(_BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _settle(self, pool: asyncpg.Pool, attempt: Attempt) -> None:
        with suppress(Exception):
            async with self.connection(pool, "settle") as conn:
                await self._settle_on(conn, attempt)

    @asynccontextmanager
    async def connection(self, pool: asyncpg.Pool, action: str) -> AsyncIterator[Conn]:
        """A pooled connection within ``acquire_timeout_secs``, never one past its lifetime."""
        conn = await self._acquire(pool, action)
        try:
            yield conn
        finally:
            # The bound asyncpg puts on a release after acquire(timeout=...).
            await pool.release(conn, timeout=self.options.acquire_timeout)

    async def _acquire(
        self, pool: asyncpg.Pool, action: str
    ) -> PoolConnectionProxy[asyncpg.Record]:
        deadline = asyncio.get_running_loop().time() + self.options.acquire_timeout
        while True:
            try:
                # Not acquire(timeout=...): asyncpg then runs the acquire in an asyncio task
                # of its own (wait_for), one more task and two more turns of the event
                # loop for every statement.
                async with asyncio.timeout_at(deadline):
                    conn = await pool.acquire()
            except StaleConnectionError:
                continue  # asyncpg closed it (max_lifetime_secs); the slot connects anew
            except TimeoutError:
                raise BackendError(
                    f"PostgreSQL {self.address}: {action} failed: no pooled connection "
                    f"within acquire_timeout_secs={self.options.acquire_timeout:g} (all "
                    f"max_connections={self.options.max_connections} busy, or connecting "
                    "took that long)"
                ) from None
            return conn

    @staticmethod
    async def _settle_on(conn: Conn, attempt: Attempt) -> None:
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
            _SETTLE_TIMEOUT_MS,
        )
        if terminated is False:
            raise BackendError(
                f"the server process {attempt.pid} still runs an interrupted write after "
                f"{_SETTLE_TIMEOUT_MS} ms"
            )

    def failure(self, action: str, exc: BaseException, *, doubtful: bool = False) -> BackendError:
        if isinstance(exc, TimeoutError):
            text = "timed out (command_timeout or connect_timeout)"
        else:
            text = self.address.scrub(str(exc)) or type(exc).__name__
        if doubtful:
            text += "; the change may or may not have been applied"
        return BackendError(f"PostgreSQL {self.address}: {action} failed: {text}")


def abandon(resource: asyncpg.Pool | asyncpg.Connection) -> None:
    """Drop connections whose event loop is elsewhere or closed, as well as can be done.

    Terminating needs the owning loop; on a closed loop it fails part way, and the
    sockets left are closed when the garbage collector finalises their transports.
    """
    with suppress(RuntimeError):
        resource.terminate()


def _connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, (OSError, *_LOST_SERVER_ERRORS)):
        return True
    # "connection is closed" / "connection was closed in the middle of operation";
    # other InterfaceErrors (e.g. "another operation is in progress") are bugs.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
