"""``FrontierCache``: what ``advance`` learnt on a driver's earlier calls.

Without it every event walks every item of a ``map`` and every finished iteration of a
``loop`` again, which makes a map of n items cost O(n²). With it an event costs O(1) per
map and loop, plus the commands it returns.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sayiir_core.machine.keys import map_item_of_key
from sayiir_core.machine.state import Snapshot
from sayiir_core.workflow.workflow import Workflow


class MapProgress:
    """Where the walk of one map stands; item indices, not keys.

    Every item below ``scanned`` was looked at: it is done, in ``running``, or in
    ``recheck`` (asked for, waiting for a retry, or named by an event since).
    """

    __slots__ = ("count", "outputs", "recheck", "running", "scanned")

    def __init__(self, count: int) -> None:
        self.count = count
        self.scanned = 0
        self.running: set[int] = set()
        self.recheck: set[int] = set()
        self.outputs: list[Any] | None = None

    def touch(self, index: int) -> None:
        """Something happened to item ``index``: look at it again on the next walk."""
        if index < self.scanned and index not in self.recheck:
            self.running.discard(index)
            self.recheck.add(index)


class FrontierCache:
    """Lets ``advance`` skip the map items and loop iterations it has settled already.

    Give one cache to every ``advance`` call of one driver, together with a ``running``
    collection that loses a step only when the event about that step is applied (a
    finished step counts as running until its outcome is applied), as the runtime's
    runner does: the cache trusts that a map item found running stays running until an
    event names it. Each call must continue from the snapshot the previous call
    returned, with the same workflow and ``running``; otherwise the cache starts over,
    so a driver that goes back to an older snapshot (after a crash, say) stays correct
    and only pays one full walk.

    Example::

        cache = FrontierCache()
        snapshot, commands = advance(wf, snapshot, event, running=busy, cache=cache)
    """

    __slots__ = ("_loops", "_maps", "_prefix", "_results", "_running", "_workflow")

    def __init__(self) -> None:
        self._maps: dict[str, MapProgress] = {}
        self._loops: dict[str, tuple[int, Any]] = {}
        # The workflow's top-level pipeline: (index of the first node not known to be
        # done, that node's input). A done node stays done and its output is fixed by
        # the checkpoints, so a chain's event costs O(1) instead of O(its position).
        self._prefix: tuple[int, Any] | None = None
        self._results: Mapping[str, Any] | None = None
        self._workflow: Workflow | None = None
        self._running: Collection[str] | None = None

    def begin(
        self,
        workflow: Workflow,
        snapshot: Snapshot,
        running: Collection[str],
        event_key: str | None,
    ) -> None:
        """Called by ``advance`` before it applies an event about ``event_key``."""
        if (
            snapshot.results is not self._results
            or workflow is not self._workflow
            or running is not self._running
        ):
            self._maps.clear()
            self._loops.clear()
            self._prefix = None
            self._workflow = workflow
            self._running = running
            return
        item = map_item_of_key(event_key) if event_key is not None else None
        if item is not None and (progress := self._maps.get(item[0])) is not None:
            progress.touch(item[1])

    def end(self, snapshot: Snapshot) -> None:
        """Called by ``advance`` with the snapshot it returns."""
        self._results = snapshot.results

    def map_progress(self, fn_id: str, count: int) -> MapProgress:
        progress = self._maps.get(fn_id)
        if progress is None or progress.count != count:
            progress = self._maps[fn_id] = MapProgress(count)
        return progress

    def loop_start(self, body_id: str) -> tuple[int, Any] | None:
        """The first iteration not known to be done, and its input."""
        return self._loops.get(body_id)

    def remember_loop(self, body_id: str, iteration: int, value: Any) -> None:
        self._loops[body_id] = (iteration, value)

    def pipeline_start(self) -> tuple[int, Any] | None:
        """Where the walk of the top-level pipeline resumes: a node index and its input."""
        return self._prefix

    def remember_pipeline(self, index: int, value: Any) -> None:
        self._prefix = (index, value)
