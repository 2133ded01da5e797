"""The gauges read from storage: ``sayiir.instances``, ``sayiir.ready.backlog`` and
``sayiir.ready.oldest_age``.

A gauge's callback runs synchronously on the exporter's thread (a Prometheus scrape, a
periodic reader), while a backend is async and bound to its own event loop. So no
callback queries storage: a ``StatsReporter`` reads its backend's ``BackendStats`` on
that backend's loop every ``every`` seconds (two cheap queries, see
``backends/stats.py``) and keeps the answers; the callbacks only read the latest
answers. A scrape therefore shows counts at most ``every`` seconds old, and costs the
database nothing.

A ``Worker`` reports its backend while it runs. A process without a worker (a web app
that only submits) reports with ``report_backend_stats(backend)`` from its own loop.
Several reporters on one backend object report it once. The counts are storage-wide:
every process that reports the same database shows the same numbers, so aggregate
them across processes with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sayiir_core.backends.stats import BackendStats, ReadyBacklog
from sayiir_core.status import Status
from sayiir_core.telemetry.attributes import ATTR_STATUS
from sayiir_core.telemetry.instruments import instruments

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

logger = logging.getLogger("sayiir.telemetry")

REFRESH_EVERY = 15.0
"""Seconds between two reads of a backend's counts (and so their age at most)."""
_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    by_status: Mapping[Status, int]
    backlog: ReadyBacklog


_lock = threading.Lock()
# Latest snapshot per running reporter, with the id of the backend it reads.
_snapshots: dict[StatsReporter, tuple[int, StatsSnapshot]] = {}


class StatsReporter:
    """Reads one backend's counts on the current loop until ``stop()``."""

    def __init__(self, backend: object, every: float = REFRESH_EVERY) -> None:
        if not every > 0:
            raise ValueError(f"every must be > 0 seconds, not {every!r}")
        self._backend = backend
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> StatsReporter:
        """Start reading, on the running loop; nothing for a backend without stats."""
        if isinstance(self._backend, BackendStats) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._read_now_and_then(self._backend), name="sayiir-backend-stats"
            )
        return self

    def stop(self) -> None:
        """Stop reading; the gauges drop this backend's counts."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with _lock:
            _snapshots.pop(self, None)

    async def refresh(self) -> bool:
        """Read the counts now (when metrics are on); a failure keeps the last ones.

        Returns False when the read failed (storage trouble, or not open yet).
        """
        backend = self._backend
        if not isinstance(backend, BackendStats) or instruments() is None:
            return True
        try:
            snapshot = StatsSnapshot(
                await backend.count_by_status(), await backend.ready_backlog(time.time())
            )
        except Exception as error:  # the worker's own calls report storage trouble
            logger.debug("reading the counts of %r for the gauges failed: %s", backend, error)
            return False
        with _lock:
            _snapshots[self] = (id(backend), snapshot)
        return True

    async def _read_now_and_then(self, backend: BackendStats) -> None:
        while True:
            read = await self.refresh()
            # A failed read (the worker may not have opened the backend yet) is retried
            # sooner, so the gauges do not wait a whole period for their first counts.
            await asyncio.sleep(self._every if read else min(self._every, _RETRY_AFTER))


def report_backend_stats(backend: object, *, every: float = REFRESH_EVERY) -> StatsReporter:
    """Feed ``backend``'s counts to the gauges from the running loop; ``stop()`` ends it.

    For a process that runs no ``Worker`` (workers report their backend themselves)::

        reporter = report_backend_stats(backend)  # in the app's startup, on its loop
        ...
        reporter.stop()
    """
    return StatsReporter(backend, every).start()


def _latest() -> list[StatsSnapshot]:
    with _lock:
        by_backend = dict(_snapshots.values())  # one per backend object: the latest read
    return list(by_backend.values())


def observe_instances(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    return [
        Observation(snapshot.by_status.get(status, 0), {ATTR_STATUS: status.value})
        for snapshot in _latest()
        for status in Status
    ]


def observe_backlog(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    return [Observation(snapshot.backlog.count) for snapshot in _latest()]


def observe_oldest_age(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    # 0 when nothing waits: a gauge that vanishes would read as "no data" in alerts.
    return [Observation(snapshot.backlog.oldest_age or 0.0) for snapshot in _latest()]
