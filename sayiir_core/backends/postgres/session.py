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

Each operation takes a pooled connection and gives it back, unless it runs inside
``hold()`` (a durable run's statements): then the task keeps the connection between
its statements for as long as nobody else needs it (``holds.py``).

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
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from sayiir_core.backends.forks import ProcessOwner, keep_forever
from sayiir_core.backends.postgres.address import Address
from sayiir_core.backends.postgres.attempts import Attempt, Done, connection_lost, settle_on
from sayiir_core.backends.postgres.holds import HeldConnections, Hold, current_hold
from sayiir_core.backends.postgres.options import PoolOptions, StaleConnectionError
from sayiir_core.errors import BackendError, WorkflowError

# Attempt and Done live in attempts.py; the statements' modules import them from here.
__all__ = ["Attempt", "Done", "Session", "abandon"]

logger = logging.getLogger("sayiir.postgres")

T = TypeVar("T")
_ATTEMPTS = 4
_BACKOFF = (0.05, 0.25, 1.0)
_CLOSE_TIMEOUT = 5.0  # seconds a graceful pool close may take


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
        self._held = HeldConnections(options.max_lifetime, options.acquire_timeout)

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
        keep_forever(self._retire_holds())
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
                self._retire_holds()
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
        held = self._retire_holds()
        if pool is None:
            return
        if loop is asyncio.get_running_loop():
            for conn in held:  # else a graceful close would wait for them
                with suppress(Exception):
                    await pool.release(conn, timeout=self.options.acquire_timeout)
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
                conn, hold = await self._take(pool, action)
                try:
                    attempt.pid = conn.get_server_pid()
                    result = await body(conn, attempt)
                except BaseException:
                    await self._give(pool, conn, hold, succeeded=False)
                    raise
                await self._give(pool, conn, hold, succeeded=True)
                return result
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
                if not connection_lost(exc):
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
                    await settle_on(conn, attempt)
                    return await resolve(conn)
            except WorkflowError:
                raise  # resolve's own verdict, e.g. LeaseLostError
            except Exception as exc:
                if not connection_lost(exc) or number == _ATTEMPTS - 1:
                    raise self.failure(action, cause, doubtful=True) from exc
                await asyncio.sleep(_BACKOFF[min(number, len(_BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _settle(self, pool: asyncpg.Pool, attempt: Attempt) -> None:
        with suppress(Exception):
            async with self.connection(pool, "settle") as conn:
                await settle_on(conn, attempt)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Within this block, this task's statements keep one pooled connection between
        them (see ``holds.py``); nested blocks share the outer one."""
        if self._held.current() is not None:
            yield
            return
        hold = Hold(self._held)
        reset = current_hold.set(hold)
        try:
            yield
        finally:
            current_hold.reset(reset)
            conn = hold.registry.close(hold)
            pool = self._pool
            # A retired registry's connections were dealt with when its pool closed.
            if conn is not None and pool is not None and not hold.registry.retired:
                # The run is over whatever happens here; a connection the pool cannot
                # take back is the pool's to terminate.
                with suppress(Exception):
                    await pool.release(conn, timeout=self.options.acquire_timeout)

    def _retire_holds(self) -> list[PoolConnectionProxy[asyncpg.Record]]:
        """A fresh registry for the next pool; the idle held connections of this one."""
        retired, self._held = (
            self._held,
            HeldConnections(self.options.max_lifetime, self.options.acquire_timeout),
        )
        return retired.retire()

    async def _take(
        self, pool: asyncpg.Pool, action: str
    ) -> tuple[PoolConnectionProxy[asyncpg.Record], Hold | None]:
        """A connection for one statement: the held one if the task has a free hold."""
        hold = self._held.usable()
        if hold is None:
            return await self._acquire(pool, action), None
        return await hold.registry.take(hold, pool, lambda: self._acquire(pool, action)), hold

    async def _give(
        self,
        pool: asyncpg.Pool,
        conn: PoolConnectionProxy[asyncpg.Record],
        hold: Hold | None,
        *,
        succeeded: bool,
    ) -> None:
        if hold is None or not hold.registry.keep(hold, conn, succeeded=succeeded):
            await pool.release(conn, timeout=self.options.acquire_timeout)

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
            held = self._held
            if held.idle and _exhausted(pool):
                # Every connection is out: take back one a run holds between statements.
                reclaimed = held.reclaim()
                if reclaimed is not None:
                    await pool.release(reclaimed, timeout=self.options.acquire_timeout)
            held.waiting += 1
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
            finally:
                held.waiting -= 1
            return conn

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


def _exhausted(pool: asyncpg.Pool) -> bool:
    """Whether an acquire would wait: every connection the pool may have is in use."""
    return pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
