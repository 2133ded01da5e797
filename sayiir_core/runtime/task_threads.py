"""The daemon threads that run sync tasks, and what happens when one hangs.

Python cannot stop a thread, so a sync task that outlives its timeout keeps its thread
until the function returns, maybe never. ``concurrent.futures.ThreadPoolExecutor`` is
the wrong home for such a function: its threads are joined at interpreter exit (a
script could not exit after one hang) and a hung thread still counts against the
pool's size (after ``max_workers`` hangs every sync task would wait forever).

``TaskThreads`` runs each call on a daemon thread and, when the caller gives up on a
call that is still running (``abandon``), stops counting that thread: a new one takes
its place, and the old one ends once the function returns. Exit never waits for it.

The hand-off is what a sync step pays on top of its function (two thread wake-ups), so
it is kept lean: an idle thread sleeps on a lock of its own and is handed the call
directly, and ``submit_to_loop`` resolves the caller's asyncio future from the thread
with one ``call_soon_threadsafe`` instead of going through a ``concurrent.futures``
future and ``asyncio.wrap_future``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("sayiir.worker")

_QUEUED, _RUNNING, _DONE = 0, 1, 2


def default_max_threads() -> int:
    """``min(32, cpu + 4)``, the size ``concurrent.futures`` picks for I/O-bound work."""
    return min(32, (os.cpu_count() or 1) + 4)


class TaskCall:
    """One submitted call; the handle ``TaskThreads.abandon`` takes."""

    __slots__ = ("abandoned", "deliver", "fn", "label", "may_start", "started_at", "state")

    def __init__(
        self,
        fn: Callable[[], Any],
        label: str,
        deliver: Callable[[Any, BaseException | None, bool], None],
        may_start: Callable[[], bool] | None = None,
    ) -> None:
        self.fn = fn
        self.label = label
        # deliver(result, error, cancelled): hands the outcome to whoever waits for it.
        self.deliver = deliver
        # Asked by the thread about to run it: False when its waiter has gone meanwhile.
        self.may_start = may_start
        self.started_at: float | None = None
        self.state = _QUEUED
        self.abandoned = False


class _Thread:
    """A counted thread's mailbox: the call handed to it, and the lock it sleeps on."""

    __slots__ = ("call", "wake")

    def __init__(self) -> None:
        self.call: TaskCall | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # held while the thread has nothing to do; released to wake it


class TaskThreads:
    """At most ``max_threads`` counted daemon threads; an abandoned call's thread is replaced.

    ``submit_to_loop`` (or ``submit``) queues a call and returns a future for it;
    ``abandon`` is for a caller that stopped waiting (timeout, cancel). A call that
    queues while every thread has been busy for ``STUCK_AFTER`` seconds or more is
    logged (at most every ``LOG_EVERY`` seconds), so a process whose threads are all
    hung says so; a pool merely busy with short calls says nothing.
    """

    STUCK_AFTER = 30.0
    LOG_EVERY = 60.0

    def __init__(self, max_threads: int | None = None, name: str = "sayiir-task") -> None:
        if max_threads is not None and max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.max_threads = max_threads or default_max_threads()
        self._name = name
        self._lock = threading.Lock()
        self._queue: deque[TaskCall] = deque()
        self._idle: list[_Thread] = []  # counted threads asleep, waiting for a call
        self._running: set[TaskCall] = set()
        self._counted = 0  # live threads that count against max_threads
        self._abandoned = 0  # threads still running a call nobody waits for
        self._next_log_at = 0.0
        self._closed = False
        self._serial = 0

    @property
    def abandoned_threads(self) -> int:
        """Threads still running a call whose caller gave up on it."""
        with self._lock:
            return self._abandoned

    @property
    def stuck(self) -> bool:
        """Every counted thread runs a call started ``STUCK_AFTER`` seconds ago or more."""
        with self._lock:
            starts = [c.started_at for c in self._running if not c.abandoned]
            if len(starts) < self.max_threads:
                return False
            newest = max((t for t in starts if t is not None), default=time.monotonic())
            return time.monotonic() - newest >= self.STUCK_AFTER

    def submit_to_loop(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], label: str = ""
    ) -> tuple[asyncio.Future[Any], TaskCall]:
        """Run ``fn()`` on a task thread; the future (of ``loop``) gets its outcome.

        Call it on ``loop``'s thread. Pass the returned ``TaskCall`` to ``abandon`` when
        you stop waiting for the future.
        """
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(result: Any, error: BaseException | None, cancelled: bool) -> None:
            # A RuntimeError: the loop closed meanwhile, so nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error, cancelled)

        call = TaskCall(fn, label, deliver)
        self._submit(call)
        return future, call

    def submit(self, fn: Callable[[], Any], label: str = "") -> concurrent.futures.Future[Any]:
        """Run ``fn()`` on a task thread; the future holds its result or exception.

        For callers outside an event loop; cancelling the future drops a queued call.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        deliver = functools.partial(_settle, future)
        self._submit(TaskCall(fn, label, deliver, future.set_running_or_notify_cancel))
        return future

    def _submit(self, call: TaskCall) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("these task threads are closed")
            if self._idle:
                thread = self._idle.pop()
                thread.call = call
                thread.wake.release()
            else:
                self._queue.append(call)
                if self._counted < self.max_threads:
                    self._start_thread()
                else:
                    self._log_saturation()

    def abandon(self, call: TaskCall) -> None:
        """The caller stopped waiting for ``call``: a queued call never runs, a running
        one's thread is left to finish and a new thread takes its place."""
        with self._lock:
            if call.state == _QUEUED:  # the thread that takes it skips it
                call.state = _DONE
                return
            if call.state == _DONE or call.abandoned:
                return
            call.abandoned = True
            self._counted -= 1
            self._abandoned += 1
            abandoned = self._abandoned
            if self._queue and not self._idle and not self._closed:
                self._start_thread()
        logger.warning(
            "sync task %s is still running after its caller gave up on it (timeout or "
            "cancel); its thread is left to finish and a new one takes its place "
            "(%d such thread(s) now)",
            call.label or "?",
            abandoned,
        )

    def close(self) -> None:
        """Idle threads end; queued calls are cancelled; running ones are not waited for."""
        with self._lock:
            self._closed = True
            queued = [call for call in self._queue if call.state == _QUEUED]
            self._queue.clear()
            for call in queued:
                call.state = _DONE
            for thread in self._idle:
                thread.wake.release()
            self._idle.clear()
        for call in queued:
            call.deliver(None, None, True)

    def _start_thread(self) -> None:
        self._counted += 1
        self._serial += 1
        thread = threading.Thread(
            target=self._serve, args=(_Thread(),), name=f"{self._name}-{self._serial}", daemon=True
        )
        thread.start()

    def _log_saturation(self) -> None:
        now = time.monotonic()
        if now < self._next_log_at:
            return
        counted = [c.started_at for c in self._running if not c.abandoned]
        newest = max((t for t in counted if t is not None), default=now)
        if now - newest < self.STUCK_AFTER:  # busy, not stuck: a thread moved lately
            return
        self._next_log_at = now + self.LOG_EVERY
        logger.warning(
            "all %d sync task threads have been busy for %.0fs or more (hung tasks?): "
            "sync tasks queue until one returns; a task that can hang needs a timeout",
            self.max_threads,
            now - newest,
        )

    def _next_call(self, me: _Thread) -> TaskCall | None:
        while True:
            with self._lock:
                call, me.call = me.call, None
                while call is None and self._queue:
                    call = self._queue.popleft()
                if call is not None:
                    if call.state != _QUEUED or (
                        call.may_start is not None and not call.may_start()
                    ):  # abandoned or cancelled while it queued
                        call.state = _DONE
                        continue
                    call.state = _RUNNING
                    call.started_at = time.monotonic()
                    self._running.add(call)
                    return call
                if self._closed:
                    self._counted -= 1
                    return None
                self._idle.append(me)
            me.wake.acquire()  # until submit hands a call over, or close

    def _serve(self, me: _Thread) -> None:
        while (call := self._next_call(me)) is not None:
            try:
                outcome: tuple[Any, BaseException | None] = (call.fn(), None)
            except BaseException as error:  # the caller decides what it means
                outcome = (None, error)
            with self._lock:
                call.state = _DONE
                self._running.discard(call)
                if call.abandoned:  # replaced meanwhile: this thread is one too many
                    self._abandoned -= 1
                    return
            call.deliver(outcome[0], outcome[1], False)
            del call, outcome  # not kept alive while this thread sleeps


def _settle(
    future: asyncio.Future[Any] | concurrent.futures.Future[Any],
    result: Any,
    error: BaseException | None,
    cancelled: bool,
) -> None:
    """Hand a call's outcome to the future its caller waits on (of either kind)."""
    if future.done():  # its waiter was cancelled meanwhile
        return
    if cancelled:
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
