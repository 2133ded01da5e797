"""``WorkListener``: LISTEN on one channel so idle workers wake when work appears.

``FinishListener`` does the same for clients waiting for an instance to finish.

Writers that make work runnable (a submit, a signal to a waiting instance, an unpause,
a retry, a released claim) call ``pg_notify`` in the same statement or transaction;
PostgreSQL delivers the notification when that commits, to every listening session,
in every process. The listening connection is a dedicated one, not from the pool: a
pooled connection is reset and shared, and LISTEN belongs to one session.

Losing the connection is not fatal: waiters fall back to sleeping out their timeout
(workers still poll) and the connection is re-made lazily, at most every few seconds.

After ``os.fork()`` the child forgets the parent's LISTEN connection (``drop_inherited``,
called when the child opens the backend) and makes its own when it first waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg

from sayiir_core.backends.forks import keep_forever
from sayiir_core.backends.notify import FinishNotifier, FinishWatch
from sayiir_core.backends.postgres.session import abandon

logger = logging.getLogger("sayiir.postgres")

_RECONNECT_AFTER = 5.0
# How long one background attempt to make the finish LISTEN connection may take.
_CONNECT_WAIT = 10.0


class WorkListener:
    """Broadcasts notifications on ``channel`` to every current ``wait``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        *,
        about: str = "new work",
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._about = about
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[asyncpg.Connection] | None = None
        self._retry_at = 0.0
        self._waiters: set[asyncio.Future[None]] = set()
        # A notification that arrives while nobody waits is kept (as generation !=
        # seen) so the next wait returns at once instead of missing it.
        self._generation = 0
        self._seen = 0

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def wait(self, max_wait: float) -> None:
        """Return on a notification, when (re)connected, or after ``max_wait`` seconds."""
        if max_wait <= 0:
            return
        self._adopt_loop()
        if self._generation != self._seen:
            self._seen = self._generation
            return
        if not self.listening:
            deadline = time.monotonic() + max_wait
            if await self._reconnect(max_wait):
                # Work may have appeared while nobody listened: let the caller look now.
                return
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(max_wait):
                await waiter
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
        self._seen = self._generation

    def _adopt_loop(self) -> None:
        if self._loop is not asyncio.get_running_loop():
            self._forget()  # left over from a loop that is gone (see Session.open)
            self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._loop is not asyncio.get_running_loop():
            self._forget()
            return
        connecting, conn = self._connecting, self._conn
        self._connecting, self._conn, self._loop = None, None, None
        connections = {conn} if conn is not None else set()
        if connecting is not None:
            connecting.cancel()
            await asyncio.wait([connecting])  # never raises; the outcome is read below
            if not connecting.cancelled() and connecting.exception() is None:
                # A connect that finished after its waiter gave up: close it too.
                connections.add(connecting.result())
        for connection in connections:
            try:
                await asyncio.wait_for(connection.close(), 5.0)
            except Exception:
                connection.terminate()
        self._wake()

    def drop_inherited(self) -> None:
        """Forget the state a parent process left, sending nothing (see ``backends.forks``)."""
        keep_forever(self._conn, self._connecting, self._loop, *self._waiters)
        self._conn, self._connecting, self._loop = None, None, None
        self._waiters = set()
        self._retry_at = 0.0
        self._generation = self._seen = 0

    def _forget(self) -> None:
        connecting, conn = self._connecting, self._conn
        self._connecting, self._conn, self._loop = None, None, None
        if connecting is not None:
            with suppress(RuntimeError):
                connecting.cancel()
        if conn is not None:
            abandon(conn)
        self._waiters.clear()

    async def _reconnect(self, max_wait: float) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._listen())
        connecting = self._connecting
        try:
            # Shielded: a waiter timing out or being cancelled leaves the connect to finish.
            self._conn = await asyncio.wait_for(asyncio.shield(connecting), max_wait)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and task is not None and not task.cancelling():
                return False  # close() stopped the connect, nobody cancelled this wait
            raise
        except Exception as exc:
            logger.warning(
                "cannot LISTEN for %s (%s); polling until it works again", self._about, exc
            )
            self._retry_at = time.monotonic() + _RECONNECT_AFTER
            return False
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
                if self._conn is None and not connecting.cancelled() and not connecting.exception():
                    # It connected just as this wait gave up (timed out): keep it, or
                    # nobody would hold, use or close that connection.
                    self._conn = connecting.result()
        return True

    async def _listen(self) -> asyncpg.Connection:
        conn = await self._connect()
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_lost)
        return conn

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._generation += 1
        self._wake()

    def _on_lost(self, conn: Any) -> None:
        if conn is self._conn:
            logger.warning("LISTEN connection lost; polling until it is re-made")
            self._conn = None
            # Wake everyone: notifications may have been missed, so look for work now.
            self._generation += 1
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class FinishListener(WorkListener):
    """LISTEN for finished instances (the payload names one) on behalf of waiting clients.

    The connection is made in the background once somebody watches, and re-made after
    a loss while anybody still does; whenever it comes up every watch fires, because
    finishes may have gone unheard meanwhile. Until then watches end only by their
    waiter's periodic re-read. An empty payload (an instance id too long for a
    notification) fires every watch.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], channel: str) -> None:
        super().__init__(connect, channel, about="finished instances")
        self._finished = FinishNotifier()
        self._keeping: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def watch(self, instance_id: str, poll_interval: float) -> AsyncIterator[FinishWatch]:
        async with self._finished.watch(instance_id, poll_interval) as watch:
            self._adopt_loop()
            if not self.listening:
                self._listen_soon()
            yield watch

    async def close(self) -> None:
        keeping, self._keeping = self._keeping, None
        if keeping is not None and not keeping.done():
            keeping.cancel()
            await asyncio.wait([keeping])
        await super().close()

    def _listen_soon(self) -> None:
        if self._keeping is None or self._keeping.done():
            self._keeping = asyncio.get_running_loop().create_task(self._keep_listening())

    async def _keep_listening(self) -> None:
        while self._finished.watching and not self.listening:
            if await self._reconnect(_CONNECT_WAIT):
                self._finished.notify_all()  # finishes before LISTEN began: read again
                return
            await asyncio.sleep(_RECONNECT_AFTER)

    def drop_inherited(self) -> None:
        keep_forever(self._keeping, self._finished)
        self._keeping = None
        self._finished = FinishNotifier()  # its watches belong to the parent's loop
        super().drop_inherited()

    def _forget(self) -> None:
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            with suppress(RuntimeError):  # its loop may be closed
                keeping.cancel()
        super()._forget()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload:
            self._finished.notify(payload)
        else:
            self._finished.notify_all()

    def _on_lost(self, conn: Any) -> None:
        current = conn is self._conn
        super()._on_lost(conn)
        if current:
            self._finished.notify_all()  # finishes may have been missed: read again now
            if self._finished.watching:
                self._listen_soon()
