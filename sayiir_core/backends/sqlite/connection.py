"""One ``sqlite3`` connection owned by one thread, so SQLite never blocks an event loop.

``sqlite3`` calls block: a commit waits for fsync, and a write waits up to
``busy_timeout`` for another process's lock. ``ConnectionThread`` runs every call on its
own thread (as aiosqlite does), in submission order, and hands the result back to the
caller's event loop; any loop in any thread may call it. The thread opens the
connection itself, so opening (which may wait for locks too) happens off the loop.

A call cancelled before its turn never runs; one already running finishes on the
thread (a transaction is all or nothing) and its result is dropped.

Forks: a child process inherits the object but not the thread, and must not touch the
parent's connection (SQLite forbids carrying a connection across ``fork``). The owner
notices the fork (``backends.forks``) and calls ``abandon()``, which keeps the inherited
connection referenced for the life of the child so it is never closed there. Before a
fork, calls in progress are let finish, so no thread is inside SQLite (holding its
global locks) when the child is copied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sayiir_core.backends.forks import keep_forever
from sayiir_core.errors import BackendError

T = TypeVar("T")

# How long a fork waits for calls in progress before copying the process anyway. A call
# waiting for another process's lock may take busy_timeout; a fork should not.
_FORK_QUIESCE_TIMEOUT = 1.0


class _Call(Generic[T]):
    __slots__ = ("function", "future", "loop")

    def __init__(
        self,
        function: Callable[[sqlite3.Connection], T],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
    ) -> None:
        self.function = function
        self.loop = loop
        self.future = future

    def run(self, conn: sqlite3.Connection) -> None:
        # Read across threads on purpose: at worst a call cancelled this very moment runs.
        if self.future.cancelled():
            return
        try:
            result = self.function(conn)
        except BaseException as exc:  # handed to the caller, whatever it is
            self._settle(_fail, exc)
        else:
            self._settle(_succeed, result)

    def refuse(self, error: BaseException) -> None:
        self._settle(_fail, error)

    def _settle(self, how: Callable[[asyncio.Future[Any], Any], None], value: object) -> None:
        # A RuntimeError: the caller's loop closed meanwhile, so nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(how, self.future, value)


def _succeed(future: asyncio.Future[Any], result: object) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class ConnectionThread:
    """A thread that opens one connection with ``connect`` and runs calls on it.

    ``opened()`` waits for the connection; ``call(fn)`` runs ``fn(conn)`` on the thread;
    ``close()`` runs the calls already submitted, then closes the connection.
    ``not_open`` builds the error for a call made after close (or a failed open).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        name: str,
        not_open: Callable[[], BackendError],
    ) -> None:
        self._not_open = not_open
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        # Guards accepting: once close() or a failed open stops it, nothing is queued
        # behind the final sentinel, so no call can wait forever.
        self._accepting_lock = threading.Lock()
        self._accepting = True
        # Held while a call runs; a fork takes it to wait for calls in progress.
        self._running = threading.Lock()
        self._connected: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Also held here, not only by the thread: what abandon() keeps alive in a child.
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._serve, args=(connect,), name=name, daemon=True)
        with _live_lock:
            _live.add(self)
        self._thread.start()

    async def opened(self) -> None:
        """Wait until the connection is open; raise what opening it raised."""
        if self._connected.done():  # the usual case, answered without a loop wake-up
            self._connected.result()
            return
        await asyncio.wrap_future(self._connected)

    async def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(conn)`` on the thread, after every call submitted before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._accepting_lock:
            if not self._accepting:
                raise self._not_open()
            self._calls.put(_Call(function, loop, future))
        return await future

    async def close(self) -> None:
        """Finish the calls already submitted, then close the connection (idempotent)."""
        self.stop()
        await asyncio.wrap_future(self._closed)

    def stop(self) -> None:
        """Ask the thread to close the connection once the calls submitted have run."""
        with self._accepting_lock:
            if self._accepting:
                self._accepting = False
                self._calls.put(None)

    def abandon(self) -> None:
        """In a forked child: forget the parent's thread without closing its connection."""
        with _live_lock:
            _live.discard(self)
        # Referenced until the child exits, so the connection is never finalised (closed)
        # here; closing it could checkpoint or unlink files the parent still uses.
        keep_forever(self)

    def _serve(self, connect: Callable[[], sqlite3.Connection]) -> None:
        try:
            conn = connect()
        except BaseException as exc:  # handed to whoever awaits opened()
            self.stop()
            self._connected.set_exception(exc)
            self._refuse_the_rest()
            self._closed.set_result(None)
            return
        self._conn = conn
        self._connected.set_result(None)
        while (item := self._calls.get()) is not None:
            with self._running:
                item.run(conn)
        try:
            conn.close()
        except sqlite3.Error as exc:
            self._closed.set_exception(exc)
        else:
            self._closed.set_result(None)

    def _refuse_the_rest(self) -> None:
        while (item := self._calls.get()) is not None:
            item.refuse(self._not_open())


_live: weakref.WeakSet[ConnectionThread] = weakref.WeakSet()
_live_lock = threading.Lock()
_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    _live_lock.acquire()
    for thread in list(_live):
        if thread._running.acquire(timeout=_FORK_QUIESCE_TIMEOUT):
            _held_for_fork.append(thread._running)


def _after_fork_in_parent() -> None:
    for lock in _held_for_fork:
        lock.release()
    _held_for_fork.clear()
    _live_lock.release()


def _after_fork_in_child() -> None:
    global _live, _live_lock
    # The parent's threads do not exist here; their owners abandon them on next use.
    # Fresh registry and lock: the old lock is held (by the parent's _before_fork).
    _held_for_fork.clear()
    _live = weakref.WeakSet()
    _live_lock = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
