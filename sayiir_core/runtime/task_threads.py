"""The daemon threads that run sync tasks, and what happens when one hangs.

Python cannot stop a thread, so a sync task that outlives its timeout keeps its thread
until the function returns, maybe never. ``concurrent.futures.ThreadPoolExecutor`` is
the wrong home for such a function: its threads are joined at interpreter exit (a
script could not exit after one hang) and a hung thread still counts against the
pool's size (after ``max_workers`` hangs every sync task would wait forever).

``TaskThreads`` runs each call on a daemon thread and, when the caller gives up on a
call that is still running (``abandon``), stops counting that thread: a new one takes
its place, and the old one ends once the function returns. Exit never waits for it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("sayiir.worker")


def default_max_threads() -> int:
    """``min(32, cpu + 4)``, the size ``concurrent.futures`` picks for I/O-bound work."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass(eq=False, slots=True)
class _Call:
    fn: Callable[[], Any]
    label: str
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    started_at: float | None = None
    abandoned: bool = False


class TaskThreads:
    """At most ``max_threads`` counted daemon threads; an abandoned call's thread is replaced.

    ``submit`` queues a call and returns its future; ``abandon`` is for a caller that
    stopped waiting (timeout, cancel). A call that queues while every thread has been
    busy for ``STUCK_AFTER`` seconds or more is logged (at most every ``LOG_EVERY``
    seconds), so a process whose threads are all hung says so; a pool merely busy with
    short calls says nothing.
    """

    STUCK_AFTER = 30.0
    LOG_EVERY = 60.0

    def __init__(self, max_threads: int | None = None, name: str = "sayiir-task") -> None:
        if max_threads is not None and max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.max_threads = max_threads or default_max_threads()
        self._name = name
        self._lock = threading.Condition(threading.Lock())
        self._queue: deque[_Call] = deque()
        self._running: dict[concurrent.futures.Future[Any], _Call] = {}
        self._counted = 0  # live threads that count against max_threads
        self._waiting = 0  # counted threads waiting for a call, not yet notified
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
            starts = [c.started_at for c in self._running.values() if not c.abandoned]
            if len(starts) < self.max_threads:
                return False
            newest = max((t for t in starts if t is not None), default=time.monotonic())
            return time.monotonic() - newest >= self.STUCK_AFTER

    def submit(self, fn: Callable[[], Any], label: str = "") -> concurrent.futures.Future[Any]:
        """Run ``fn()`` on a task thread; the future holds its result or exception."""
        call = _Call(fn, label)
        with self._lock:
            if self._closed:
                raise RuntimeError("these task threads are closed")
            self._queue.append(call)
            if self._waiting > 0:
                self._waiting -= 1
                self._lock.notify()
            elif self._counted < self.max_threads:
                self._start_thread()
            else:
                self._log_saturation()
        return call.future

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """The caller stopped waiting for ``future``: a queued call never runs, a running
        one's thread is left to finish and a new thread takes its place."""
        if future.cancel():  # still queued: the thread that pops it skips it
            return
        with self._lock:
            call = self._running.get(future)
            if call is None or call.abandoned or future.done():
                return
            call.abandoned = True
            self._counted -= 1
            self._abandoned += 1
            abandoned = self._abandoned
            if self._queue and self._waiting == 0 and not self._closed:
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
            queued = list(self._queue)
            self._queue.clear()
            self._lock.notify_all()
        for call in queued:
            call.future.cancel()

    def _start_thread(self) -> None:
        self._counted += 1
        self._serial += 1
        thread = threading.Thread(
            target=self._serve, name=f"{self._name}-{self._serial}", daemon=True
        )
        thread.start()

    def _log_saturation(self) -> None:
        now = time.monotonic()
        if now < self._next_log_at:
            return
        counted = [c.started_at for c in self._running.values() if not c.abandoned]
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

    def _next_call(self) -> _Call | None:
        with self._lock:
            while True:
                while not self._queue:
                    if self._closed:
                        self._counted -= 1
                        return None
                    self._waiting += 1
                    self._lock.wait()
                call = self._queue.popleft()
                if call.future.set_running_or_notify_cancel():
                    call.started_at = time.monotonic()
                    self._running[call.future] = call
                    return call

    def _serve(self) -> None:
        while (call := self._next_call()) is not None:
            try:
                result = call.fn()
            except BaseException as error:  # the caller decides what it means
                call.future.set_exception(error)
            else:
                call.future.set_result(result)
            with self._lock:
                del self._running[call.future]
                if call.abandoned:  # replaced meanwhile: this thread is one too many
                    self._abandoned -= 1
                    return
