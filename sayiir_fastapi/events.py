"""Live history for Server-Sent Events: in-process wake-ups, a re-read backstop.

The in-process workers report every history event they write (``Worker(on_event=)``),
and the router reports the controls it applies; each wakes the streams watching that
instance at once. Events written by another process (``uvicorn --workers N``, a
``sayiir worker``) are found by re-reading the history every ``poll_interval`` seconds.
A stream always sends what the backend holds, in ``seq`` order, so a wake-up is only
a hint to read now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sayiir_core import AsyncWorkflowClient, HistoryEvent, WorkflowStatus

# A comment line now and then keeps proxies from closing an idle stream.
KEEP_ALIVE_SECONDS = 15.0
# What EventSource waits before reconnecting (the stream ends every stream_seconds).
RECONNECT_MILLISECONDS = 1000


class EventHub:
    """Wakes the streams that watch an instance (or every instance) in this process."""

    def __init__(self) -> None:
        self._waiters: dict[str | None, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def publish(self, instance_id: str, event: HistoryEvent | None = None) -> None:
        """Something happened to ``instance_id``; ``event`` is for ``on_event`` callers."""
        for key in (instance_id, None):
            for loop, waiter in list(self._waiters.get(key, ())):
                _set_on(loop, waiter)

    def wake_all(self) -> None:
        for waiters in list(self._waiters.values()):
            for loop, waiter in list(waiters):
                _set_on(loop, waiter)

    @contextlib.contextmanager
    def subscribe(self, instance_id: str | None) -> Iterator[asyncio.Event]:
        """An event set whenever ``instance_id`` (``None``: any instance) changes here."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        self._waiters.setdefault(instance_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            waiters = self._waiters.get(instance_id)
            if waiters is not None:
                waiters.discard(entry)
                if not waiters:
                    del self._waiters[instance_id]


def _set_on(loop: asyncio.AbstractEventLoop, waiter: asyncio.Event) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        waiter.set()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(waiter.set)


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One message of an instance's stream: a history event, or the final status."""

    kind: str  # "history" or "end"
    seq: int | None
    event: HistoryEvent | None = None
    status: WorkflowStatus | None = None


async def instance_stream(
    client: AsyncWorkflowClient,
    hub: EventHub,
    instance_id: str,
    *,
    after_seq: int,
    poll_interval: float,
    max_seconds: float,
) -> AsyncIterator[StreamItem | None]:
    """History events after ``after_seq`` as they are written, then ``end`` once finished.

    Yields ``None`` when a keep-alive is due. Returns after ``max_seconds`` even if the
    instance runs on (the client reconnects with the last ``seq`` it saw).
    """
    deadline = time.monotonic() + max_seconds
    quiet_since = time.monotonic()
    sent = after_seq
    with hub.subscribe(instance_id) as woken:
        while True:
            woken.clear()
            # Status first: a finish is committed with its last events, so the history
            # read after a finished status holds every event there will be.
            status = await client.status(instance_id)
            for event in await client.history(instance_id):
                if event.seq > sent:
                    sent = event.seq
                    quiet_since = time.monotonic()
                    yield StreamItem("history", event.seq, event=event)
            if status.is_finished():
                yield StreamItem("end", None, status=status)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await _wait(woken, min(poll_interval, left))
            if time.monotonic() - quiet_since >= KEEP_ALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield None


async def any_change(hub: EventHub, *, within: float) -> bool:
    """Wait until any instance changes in this process, or ``within`` seconds pass."""
    with hub.subscribe(None) as woken:
        return await _wait(woken, within)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def sse_message(*, data: Any, event: str | None = None, event_id: int | None = None) -> bytes:
    """One Server-Sent Events message with JSON ``data``."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    # orjson never emits a raw newline inside a document, so one data line is enough.
    lines.append("data: " + orjson.dumps(data, default=str).decode())
    return ("\n".join(lines) + "\n\n").encode()


SSE_KEEP_ALIVE = b": keep-alive\n\n"
SSE_PREAMBLE = f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
