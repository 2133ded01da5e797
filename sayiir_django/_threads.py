"""Threads that run a backend's ORM work off the event loop, each with its own connection.

Django connections belong to the thread that opened them, so a thread pool whose
threads outlive the work would leak them. These threads close their connections when
the backend closes (the only way: from the thread that owns them), which is also what
lets a test database be dropped afterwards.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections

T = TypeVar("T")

_Job = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]


class ConnectionThreads:
    """Up to ``max_threads`` threads, started on demand, running submitted callables."""

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, not {max_threads!r}")
        self._max_threads = max_threads
        self._name = name
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on one of the threads; returns at once."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's threads do not exist here.
                self._reset()
            if self._closed:
                raise RuntimeError(f"{self._name}: the backend is closed")
            self._jobs.put((future, fn))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_threads:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self) -> None:
        """Let the queued work finish, then stop every thread and close its connections."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._jobs.put(None)
        for thread in threads:
            thread.join()
        with self._lock:
            self._reset()

    def _serve(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                future, fn = job
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn()
                    except BaseException as exc:
                        self._idle.release()
                        future.set_exception(exc)
                    else:
                        # Idle before the caller hears back: its next job, often sent at
                        # once, then goes to this thread rather than starting another.
                        self._idle.release()
                        future.set_result(result)
                        del result
                else:
                    self._idle.release()
                del job, future, fn
        finally:
            connections.close_all()
