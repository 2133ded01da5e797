"""The machine's work per event does not grow with the size of a map or a loop.

Issue 10, item 6: every completion of a map item walked every item again, so a map of n
items cost O(n²) (10,000 items: 13 s). These tests pin the fix without a clock: they
count the Python lines the machine runs per event, and the memory one event allocates,
while a driver feeds it events the way the runtime's runner does (it tells the machine
what runs already and keeps one ``FrontierCache``).
"""

from __future__ import annotations

import copy
import pickle
import random
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest

import sayiir_core
from sayiir_core.machine import (
    Checkpoints,
    FrontierCache,
    RunTask,
    Snapshot,
    TaskCompleted,
    Tick,
    advance,
    start,
)
from sayiir_core.status import Status
from sayiir_core.workflow import Flow, LoopResult, Workflow

T = TypeVar("T")
PACKAGE = str(Path(sayiir_core.__file__).parent)


def inc(x: int) -> int:
    return x + 1


def count_up(x: int) -> LoopResult[int]:
    return LoopResult.again(x + 1)


def lines_run(call: Callable[[], T]) -> tuple[T, int]:
    """``call()`` and how many lines of sayiir_core it ran (pure Python work, no clock)."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None  # other modules' lines are not counted, nor traced
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        result = call()
    finally:
        sys.settrace(None)
    return result, count


class RunnerLikeDriver:
    """Starts every step it is asked for and finishes them one by one, in random order."""

    def __init__(self, workflow: Workflow, input_value: Any) -> None:
        self.workflow = workflow
        self.running: dict[str, RunTask] = {}
        self.cache = FrontierCache()
        self.snapshot = start(input_value)
        self.rng = random.Random(7)
        self.apply(Tick(0.0))

    def apply(self, event: Tick | TaskCompleted) -> None:
        self.snapshot, commands = advance(
            self.workflow, self.snapshot, event, running=self.running, cache=self.cache
        )
        for command in commands:
            if isinstance(command, RunTask):
                self.running[command.key] = command

    def next_completion(self) -> TaskCompleted:
        key = self.rng.choice(list(self.running)) if len(self.running) < 64 else self._any()
        command = self.running.pop(key)  # as the runner does: out of `running`, then applied
        return TaskCompleted(key, command.task.fn(command.input), 0.0)

    def _any(self) -> str:
        # Picking from a huge dict at random would cost O(n) in the test itself.
        keys = iter(self.running)
        for _ in range(self.rng.randrange(32)):
            next(keys)
        return next(keys)

    def lines_per_event(self) -> list[int]:
        """Finish everything; the lines the machine ran for each event."""
        counts = []
        while self.running:
            event = self.next_completion()
            _, lines = lines_run(lambda event=event: self.apply(event))  # type: ignore[misc]
            counts.append(lines)
        assert self.snapshot.status is Status.COMPLETED, self.snapshot
        return counts


def steady(counts: list[int]) -> list[int]:
    """Leave out the first event (it settles the frontier asked for at the start) and the
    last (it collects the outputs): both are O(n) once, which is linear overall."""
    return counts[1:-1]


@pytest.mark.parametrize("max_concurrency", [None, 10])
def test_a_map_item_completion_costs_the_same_however_many_items(
    max_concurrency: int | None,
) -> None:
    workflow = Flow("wide").map(inc, name="item", max_concurrency=max_concurrency).build()
    small = steady(RunnerLikeDriver(workflow, list(range(200))).lines_per_event())
    large = steady(RunnerLikeDriver(workflow, list(range(2000))).lines_per_event())
    # The old walk ran a few lines per item on every event: ~10x more for 10x the items.
    assert max(large) <= max(small), (max(small), max(large))
    assert sum(large) <= 11 * sum(small)  # ten times the events, not a hundred times the work


def test_a_whole_wide_map_is_linear() -> None:
    workflow = Flow("wide").map(inc, name="item").build()
    small = sum(RunnerLikeDriver(workflow, list(range(500))).lines_per_event())
    large = sum(RunnerLikeDriver(workflow, list(range(2000))).lines_per_event())
    assert large <= 4.5 * small, (small, large)  # quadratic would be 16x


def test_a_loop_iteration_costs_the_same_however_many_came_before() -> None:
    def lines_for(iterations: int) -> list[int]:
        loop = Flow("poll").loop(count_up, max_iterations=iterations, on_max="exit_with_last")
        driver = RunnerLikeDriver(loop.build(), 0)
        counts = driver.lines_per_event()
        assert driver.snapshot.output == iterations
        return counts

    small, large = lines_for(100), lines_for(1000)
    assert max(large[:-1]) <= max(small[:-1]), (max(small), max(large))


def test_an_event_does_not_copy_the_results() -> None:
    workflow = Flow("wide").map(inc, name="item").build()
    driver = RunnerLikeDriver(workflow, list(range(20_000)))
    for _ in range(10_000):
        driver.apply(driver.next_completion())
    tracemalloc.start()
    try:
        peaks = []
        for _ in range(20):
            event = driver.next_completion()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            driver.apply(event)
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    # A copy of 10,000 results is several hundred KB; one event needs a few KB.
    assert max(peaks) < 64 * 1024, peaks


# -- Checkpoints ---------------------------------------------------------------------------


def test_checkpoints_versions_never_change() -> None:
    empty = Checkpoints()
    one = empty.with_added("a", 1)
    two = one.with_added("b", 2)
    other = one.with_added("c", 3)  # from an older version: a branch of its own
    assert dict(empty) == {}
    assert dict(one) == {"a": 1}
    assert dict(two) == {"a": 1, "b": 2}
    assert dict(other) == {"a": 1, "c": 3}
    assert "b" not in one
    assert "b" not in other
    assert "c" not in two
    with pytest.raises(KeyError):
        one["b"]
    assert two.keys_added_since(empty) == ["a", "b"]
    assert other.keys_added_since(one) == ["c"]
    assert two.keys_added_since({"a": 1}) == ["b"]  # any mapping, the slow way
    assert two == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="written already"):
        two.with_added("a", 9)
    assert copy.deepcopy(one) == {"a": 1}
    assert pickle.loads(pickle.dumps(two)) == {"a": 1, "b": 2}


def test_a_snapshot_keeps_any_mapping_as_checkpoints() -> None:
    snapshot = Snapshot(input=None, results={"x": 1})
    assert isinstance(snapshot.results, Checkpoints)
    assert snapshot == Snapshot(input=None, results={"x": 1})
    later = Snapshot(input=None, results=snapshot.results.with_added("y", 2))
    assert later.results_added_since(snapshot) == ["y"]


def test_adding_to_the_newest_version_does_not_copy() -> None:
    results = Checkpoints((f"k{i}", i) for i in range(50_000))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        added = results.with_added("new", 1)
        grown = tracemalloc.get_traced_memory()[1] - before
        new_keys = added.keys_added_since(results)
    finally:
        tracemalloc.stop()
    assert new_keys == ["new"]
    assert grown < 4096, grown  # a copy of 50,000 entries is megabytes
