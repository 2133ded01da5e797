"""The one long-lived event-loop thread behind the sync API.

The sync functions and ``WorkflowClient`` run their coroutines here instead of calling
``asyncio.run`` per call: connection pools (asyncpg) are bound to the loop that created
them, and starting a loop per call would cost more than a whole step.

After ``os.fork()`` the child has a copy of the loop object but not its thread: the
copy says it is running, yet nothing would ever run a coroutine sent to it. A fork hook
makes the child start a loop thread of its own on first use. The inherited loop is
neither closed nor stopped (its epoll instance and self-pipe are shared with the
parent, which still uses them); it is kept referenced until exit so that no finaliser
runs on it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop forever; ``run`` blocks on a coroutine."""

    def __init__(self, name: str = "sayiir-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        _live_loop_threads.add(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                self._start()
            assert self._loop is not None
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coroutine`` on the loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "the sync sayiir API was called from inside an async task; "
                "use AsyncWorkflowClient there"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's loop (without touching it) and the lock."""
        if self._loop is not None:
            _inherited_loops.append(self._loop)
        self._loop = self._thread = None
        # Another thread of the parent may have held it at the fork; it is not here.
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not loop.is_running():
                loop.close()


_live_loop_threads: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_inherited_loops: list[asyncio.AbstractEventLoop] = []


def _reset_loop_threads_in_child() -> None:
    for loop_thread in list(_live_loop_threads):
        loop_thread._forget_after_fork()


os.register_at_fork(after_in_child=_reset_loop_threads_in_child)

_default = LoopThread()
atexit.register(_default.stop)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the process's sayiir loop thread and return its result."""
    return _default.run(coroutine)


def submit(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coroutine`` on the process's sayiir loop thread; returns at once."""
    return _default.submit(coroutine)


def loop_of_sync_api() -> asyncio.AbstractEventLoop:
    """The event loop behind the sync API (started on first use)."""
    return _default.loop
