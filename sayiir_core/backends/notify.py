"""Wake-ups in this process, so waiting code reacts without polling delay.

``WorkNotifier``: backends call ``notify()`` when something becomes runnable (a submit,
a signal, an unpause). Workers ``await wait(max_wait)`` from any event loop, any thread.
Work made runnable by another process is still found by the workers' polling fallback.

``FinishNotifier``: backends call ``notify(instance_id)`` when an instance finishes, and
clients waiting for its result ``watch`` it (``AsyncWorkflowClient.wait``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class WorkNotifier:
    """A thread-safe broadcast: ``notify`` wakes every current ``wait``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self, max_wait: float) -> None:
        """Return on the next ``notify`` or after ``max_wait`` seconds."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(max_wait):
                await waiter[1].wait()
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)


class FinishWatch:
    """One waiter's subscription to one instance finishing.

    ``poll_interval`` is how often the waiter should re-read the instance anyway: the
    backstop for finishes this watch cannot hear of (another process on SQLite, a lost
    LISTEN connection on PostgreSQL).
    """

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()

    def fire(self) -> bool:
        """Thread-safe: end the current (or the next) ``wait``; False if its loop is gone."""
        try:
            self._loop.call_soon_threadsafe(self._finished.set)
        except RuntimeError:  # the waiter's loop closed without unwinding the watch
            return False
        return True

    async def wait(self, max_wait: float) -> bool:
        """Wait until the instance may have finished (True) or ``max_wait`` ran out."""
        try:
            async with asyncio.timeout(max_wait):
                await self._finished.wait()
        except TimeoutError:
            return False
        finally:
            self._finished.clear()
        return True


class FinishNotifier:
    """Thread-safe: ``notify(instance_id)`` fires every watch of that instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, set[FinishWatch]] = {}

    @property
    def watching(self) -> bool:
        return bool(self._watches)

    def notify(self, instance_id: str) -> None:
        with self._lock:
            watches = list(self._watches.get(instance_id, ()))
        self._fire(watches)

    def notify_all(self) -> None:
        """Fire every watch: finishes may have been missed (a lost connection)."""
        with self._lock:
            watches = [watch for group in self._watches.values() for watch in group]
        self._fire(watches)

    def _fire(self, watches: list[FinishWatch]) -> None:
        dead = [watch for watch in watches if not watch.fire()]
        if dead:
            with self._lock:
                for watch in dead:
                    for group in self._watches.values():
                        group.discard(watch)
                self._watches = {key: group for key, group in self._watches.items() if group}

    @asynccontextmanager
    async def watch(self, instance_id: str, poll_interval: float) -> AsyncIterator[FinishWatch]:
        watch = FinishWatch(poll_interval)
        with self._lock:
            self._watches.setdefault(instance_id, set()).add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                group = self._watches.get(instance_id, set())
                group.discard(watch)
                if not group:
                    self._watches.pop(instance_id, None)


class FileNotifiers:
    """The notifiers of one SQLite file, shared by every backend object on it."""

    def __init__(self) -> None:
        self.work = WorkNotifier()
        self.finish = FinishNotifier()


_by_path: dict[str, FileNotifiers] = {}
_by_path_lock = threading.Lock()


def notifiers_for(path: Path) -> FileNotifiers:
    """The notifiers shared by every backend object on one database file in this process."""
    key = str(path.resolve())
    with _by_path_lock:
        return _by_path.setdefault(key, FileNotifiers())


def _forget_the_parents_notifiers() -> None:
    # A forked child starts with none: the parent's waiters belong to loops that do not
    # run here, and a parent thread may have held a notifier's lock at the fork.
    global _by_path, _by_path_lock
    _by_path = {}
    _by_path_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_the_parents_notifiers)
