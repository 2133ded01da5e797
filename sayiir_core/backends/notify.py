"""Wake-ups for idle workers in this process, so new work starts without polling delay.

Backends call ``notify()`` when something becomes runnable (a submit, a signal, an
unpause). Workers ``await wait(max_wait)`` from any event loop, any thread. Work made
runnable by another process is still found by the workers' polling fallback.
"""

from __future__ import annotations

import asyncio
import threading
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


_by_path: dict[str, WorkNotifier] = {}
_by_path_lock = threading.Lock()


def notifier_for(path: Path) -> WorkNotifier:
    """The notifier shared by every backend object on one database file in this process."""
    key = str(path.resolve())
    with _by_path_lock:
        return _by_path.setdefault(key, WorkNotifier())
