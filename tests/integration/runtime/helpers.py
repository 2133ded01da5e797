"""Small helpers shared by the runtime tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_until(predicate: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")
        time.sleep(0.01)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


class Calls:
    """A thread-safe record of calls, with the peak of calls running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Any] = []
        self.running = 0
        self.peak = 0

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1

    def count(self, item: Any) -> int:
        with self._lock:
            return self.items.count(item)


class GatedWorkflow:
    """``first`` (which blocks until ``release`` is set) then ``second``; records calls."""

    def __init__(self, name: str) -> None:
        from sayiir_core import Flow

        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = Calls()

        def first(x: int) -> int:
            self.calls.add("first")
            self.started.set()
            assert self.release.wait(10)
            return x + 1

        def second(x: int) -> int:
            self.calls.add("second")
            return x * 10

        self.workflow = Flow(name).then(first).then(second).build()
