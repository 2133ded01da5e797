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
import contextlib
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
        self._thread_ident: int | None = None
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
        """Run ``coroutine`` on the loop and block until it ends; its error is raised here.

        If the wait is interrupted (``KeyboardInterrupt`` in the main thread), the task is
        cancelled on the loop and the interruption propagates at once.
        """
        if not asyncio.iscoroutine(coroutine):
            raise TypeError("A coroutine object is required")
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self.loop
        if threading.get_ident() == self._thread_ident:
            coroutine.close()
            raise RuntimeError(
                "the sync sayiir API was called from inside an async task; "
                "use AsyncWorkflowClient there"
            )
        # A lock per call instead of ``run_coroutine_threadsafe``: its concurrent future
        # wakes the caller through a Condition, several times dearer per call.
        handoff = _Handoff(coroutine)
        try:
            # Scheduling is inside the ``try``: a signal may interrupt it once the
            # coroutine already runs, and that run must be cancelled too.
            loop.call_soon_threadsafe(handoff.start)
            handoff.finished.acquire()
        except BaseException:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile (exit)
                    loop.call_soon_threadsafe(handoff.cancel)
            raise
        error, value = handoff.error, handoff.value
        handoff.error = None  # the error's traceback holds the handoff: no cycle
        if error is None:
            return value  # type: ignore[no-any-return]
        try:
            raise error
        finally:
            del error  # no cycle through this frame's traceback

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
        self._loop, self._thread, self._thread_ident = loop, thread, thread.ident

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's loop (without touching it) and the lock."""
        if self._loop is not None:
            _inherited_loops.append(self._loop)
        self._loop = self._thread = self._thread_ident = None
        # Another thread of the parent may have held it at the fork; it is not here.
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._thread_ident = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not loop.is_running():
                loop.close()


class _Handoff:
    """One ``run`` call: run on the loop, its outcome handed back through a lock."""

    __slots__ = ("coroutine", "error", "finished", "task", "value")

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine: Coroutine[Any, Any, Any] | None = coroutine
        self.finished = threading.Lock()
        self.finished.acquire()  # released on the loop thread once the coroutine ends
        self.task: asyncio.Task[None] | None = None  # held here: the loop only holds it weakly
        self.value: Any = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """On the loop (in the caller's context, copied by ``call_soon_threadsafe``)."""
        try:
            self.task = asyncio.get_running_loop().create_task(self._run())
        except BaseException as exc:
            self.error = exc
            self.finished.release()
            raise

    async def _run(self) -> None:
        # The lock is released inside the task's last step, not by a done callback, which
        # would cost the loop one more turn before the caller wakes.
        coroutine, self.coroutine = self.coroutine, None
        assert coroutine is not None
        try:
            self.value = await coroutine
        except asyncio.CancelledError:
            # What ``run_coroutine_threadsafe(...).result()`` raised for a cancelled task.
            self.error = concurrent.futures.CancelledError()
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            self.error = exc
            raise  # asyncio lets these stop the loop; the caller still gets them
        except BaseException as exc:
            self.error = exc  # raised in the caller; the task itself ends quietly
        finally:
            self.finished.release()

    def cancel(self) -> None:
        """On the loop: the caller stopped waiting (``KeyboardInterrupt``)."""
        if self.coroutine is not None:  # the task has not started it yet
            self.coroutine.close()
        if self.task is not None:
            self.task.cancel()


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
