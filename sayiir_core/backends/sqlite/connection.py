"""One ``sqlite3`` connection served by one thread, so SQLite never stalls an event loop.

``sqlite3`` calls block: a commit waits for fsync, and a write waits up to
``busy_timeout`` for another process's lock. ``ConnectionThread`` runs calls on its own
thread (as aiosqlite does), in submission order, and hands the result back to the
caller's event loop; any loop in any thread may call it. The thread opens the
connection itself, so opening (which may wait for locks too) happens off the loop.

A hop to the thread and back costs two thread wake-ups and about 75,000 instructions,
a tenth of a durable step's CPU (measured with callgrind on a chain of steps). So a
call may first be tried where it was made (``try_here``) when nothing is queued or
running on the connection and recent calls of its kind (reads, or writes) took less
than ``_QUICK`` on average (fsync included; calls on the thread are timed too, so a
slow disk is noticed and so is its recovery). The attempt must not wait for a lock:
it raises ``WouldWait``, the call goes to the thread, and so do the next
``_THREAD_ONLY_AFTER_REFUSAL`` calls, since another process is busy writing. So the
loop is held about ``_QUICK`` per call at most, apart from the few calls that find the
disk has turned slow.

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
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sayiir_core.backends.forks import keep_forever
from sayiir_core.errors import BackendError

T = TypeVar("T")

# How long a fork waits for calls in progress before copying the process anyway. A call
# waiting for another process's lock may take busy_timeout; a fork should not.
_FORK_QUIESCE_TIMEOUT = 1.0
# Calls run in place only while recent ones of their kind (reads, or writes) took less
# than this on average (seconds, fsync included). The average weighs each call
# 1/_RECENT_CALLS, so one outlier (a preemption, a checkpoint's sync) does not send the
# next calls to the thread, and a disk that turned slow does within a few calls.
_QUICK = 0.001
_RECENT_CALLS = 16
# After a lock refusal, how many calls go straight to the thread.
_THREAD_ONLY_AFTER_REFUSAL = 64


class WouldWait(Exception):  # noqa: N818 - a signal between two functions, not an error
    """Raised by a ``try_here`` attempt that would have to wait (for a lock); it has
    left nothing behind, and the call runs on the thread instead."""


class _Call(Generic[T]):
    __slots__ = ("function", "future", "loop", "writes")

    def __init__(
        self,
        function: Callable[[sqlite3.Connection], T],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[T] | None,
        writes: bool = False,
    ) -> None:
        self.function = function
        self.loop = loop
        self.future = future
        self.writes = writes

    def cancelled(self) -> bool:
        return self.future is not None and self.future.cancelled()

    def run(self, conn: sqlite3.Connection) -> None:
        # Read across threads on purpose: at worst a call cancelled this very moment runs.
        if self.future is not None and self.future.cancelled():
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
        if self.loop is None or self.future is None:  # a call nobody waits for (background)
            return
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

    ``opened()`` waits for the connection; ``call(fn)`` runs ``fn(conn)`` on the thread
    (or ``try_here(conn)`` on the caller's, see the module's docstring);
    ``run_later(fn)`` queues ``fn(conn)`` with nobody waiting; ``close()`` runs the calls
    already submitted, then closes the connection. ``not_open`` builds the error for a
    call made after close (or a failed open).
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
        # Guards accepting and _outstanding: once close() or a failed open stops it,
        # nothing is queued behind the final sentinel, so no call can wait forever.
        self._accepting_lock = threading.Lock()
        self._accepting = True
        # Calls queued and not yet finished: a call tried in place would overtake them.
        self._outstanding = 0
        # Mean duration of recent calls (see _QUICK), reads and writes apart (quick reads
        # must not let a write whose fsync turned slow run in place), and how many more
        # calls go to the thread after a lock refusal.
        self._recent = {False: 0.0, True: 0.0}
        self._thread_only = 0
        # Held while a call runs (here or on the thread), and while the connection
        # closes; a fork takes it to wait for calls in progress.
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

    async def call(
        self,
        function: Callable[[sqlite3.Connection], T],
        *,
        try_here: Callable[[sqlite3.Connection], T] | None = None,
        writes: bool = False,
    ) -> T:
        """Run ``function(conn)`` on the thread, after every call submitted before it.

        With ``try_here``, first try ``try_here(conn)`` on the calling thread if the
        connection is idle and has been quick; it raises ``WouldWait`` rather than wait
        for a lock, and ``function`` then runs on the thread as usual. ``writes``: the
        call writes (and syncs); writes and reads keep apart averages of their duration.
        """
        loop = asyncio.get_running_loop()
        with self._accepting_lock:
            if not self._accepting:
                raise self._not_open()
            idle = self._take_if_idle(writes) if try_here is not None else None
            if idle is None:
                future: asyncio.Future[T] = loop.create_future()
                self._outstanding += 1
                self._calls.put(_Call(function, loop, future, writes))
        if idle is None:
            return await future
        assert try_here is not None
        try:
            return self._timed(try_here, idle, writes)
        except WouldWait:
            # Another connection holds a lock: it writes now and likely again soon, so
            # the next calls wait on the thread rather than be refused here first.
            self._thread_only = _THREAD_ONLY_AFTER_REFUSAL
        finally:
            self._running.release()
        return await self.call(function, writes=writes)

    def run_later(self, function: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``function(conn)`` on the thread with nobody waiting; it must not raise.

        Ignored once the thread is closing: what it would do is then not needed.
        """
        with self._accepting_lock:
            if self._accepting:
                self._outstanding += 1
                self._calls.put(_Call(function, None, None))

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

    def _take_if_idle(self, writes: bool) -> sqlite3.Connection | None:
        """The connection, with ``_running`` taken, if a call may run in place now.

        Called under ``_accepting_lock``: open, nothing queued or running (so the call
        overtakes nobody), recent calls quick, no lock refusal lately.
        """
        if (
            self._conn is None
            or self._outstanding
            or self._thread_only
            or self._recent[writes] >= _QUICK
        ):
            return None
        return self._conn if self._running.acquire(blocking=False) else None

    def _timed(
        self, function: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection, writes: bool
    ) -> T:
        """``function(conn)``, its duration counted in the recent average of its kind."""
        started = time.perf_counter()
        try:
            return function(conn)
        finally:
            took = time.perf_counter() - started
            self._recent[writes] += (took - self._recent[writes]) / _RECENT_CALLS
            if self._thread_only:
                self._thread_only -= 1

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
                if item.loop is None or item.cancelled():
                    item.run(conn)  # says nothing of a call's time: background, or skipped
                else:
                    self._timed(item.run, conn, item.writes)
            with self._accepting_lock:
                self._outstanding -= 1
        try:
            with self._running:  # a call tried in place may still be running
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
