"""The engine's own work per step stays constant and has no avoidable parts (issue 15).

Counted, never timed: Python lines the machine runs per event, asyncio tasks a run
creates, writes a run builds for a sink that keeps nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import sayiir_core
from sayiir_core.backends.base import BufferedSignal, ControlRequest, StepWrite
from sayiir_core.codec import DEFAULT_CODEC
from sayiir_core.machine import FrontierCache, RunTask, TaskCompleted, Tick, advance, start
from sayiir_core.runtime.executor import LocalExecutor
from sayiir_core.runtime.in_memory import run_in_memory
from sayiir_core.runtime.runner import IN_MEMORY_RUN, InstanceRunner
from sayiir_core.status import Status
from sayiir_core.workflow import Flow, Workflow

T = TypeVar("T")
PACKAGE = str(Path(sayiir_core.__file__).parent)


def inc(x: int) -> int:
    return x + 1


async def ainc(x: int) -> int:
    return x + 1


def chain(length: int, step: Callable[[int], Any] = inc) -> Workflow:
    flow = Flow(f"chain{length}")
    for i in range(length):
        flow = flow.then(step, name=f"step_{i}")
    return flow.build()


def lines_run(call: Callable[[], T]) -> tuple[T, int]:
    """``call()`` and how many lines of sayiir_core it ran."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        result = call()
    finally:
        sys.settrace(None)
    return result, count


def lines_per_chain_event(length: int) -> list[int]:
    """Drive a chain through ``advance`` as the runner does; lines per completion."""
    workflow = chain(length)
    cache = FrontierCache()
    running: dict[str, RunTask] = {}
    snapshot = start(0)

    def apply(event: Tick | TaskCompleted) -> None:
        nonlocal snapshot
        snapshot, commands = advance(workflow, snapshot, event, running=running, cache=cache)
        running.update({c.key: c for c in commands if isinstance(c, RunTask)})

    apply(Tick(0.0))
    counts = []
    while running:
        key, command = running.popitem()
        event = TaskCompleted(key, command.task.fn(command.input), 0.0)
        counts.append(lines_run(lambda event=event: apply(event))[1])  # type: ignore[misc]
    assert snapshot.status is Status.COMPLETED
    assert snapshot.output == length
    return counts


def test_a_chain_step_costs_the_same_however_far_down_the_chain() -> None:
    # The walk used to start from the first node on every event: step n of a chain
    # cost O(n), a chain of n steps O(n^2).
    short, long = lines_per_chain_event(5), lines_per_chain_event(60)
    assert max(long) <= max(short), (max(short), max(long))
    assert long[-2] <= long[1], long


class _DropEverything:
    """A sink that keeps nothing, as a run without persistence has; it must not be fed."""

    discards_writes = True

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, write: StepWrite) -> ControlRequest | None:
        self.writes += 1
        return None

    async def next_signal(self, name: str) -> BufferedSignal | None:
        return None

    async def pending_control(self) -> ControlRequest | None:
        return None


class _Keeper(_DropEverything):
    discards_writes = False


async def _run_with(sink: _DropEverything) -> Any:
    workflow = chain(4, ainc)
    runner = InstanceRunner(
        workflow,
        "run-1",
        start(0),
        executor=LocalExecutor(),
        codec=DEFAULT_CODEC,
        sink=sink,
        park=IN_MEMORY_RUN,
    )
    return await runner.run()


def test_a_sink_that_keeps_nothing_is_sent_no_writes() -> None:
    dropping, keeping = _DropEverything(), _Keeper()
    assert asyncio.run(_run_with(dropping)).output == 4
    assert asyncio.run(_run_with(keeping)).output == 4
    assert dropping.writes == 0
    assert keeping.writes == 4  # one per step


def test_a_step_costs_one_asyncio_task() -> None:
    # Waiting for the running step used to go through wait_for(Event.wait()), which made
    # a second task per step.
    created: list[str] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            created.append(getattr(coro, "__qualname__", "?"))
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        try:
            executor = LocalExecutor()
            return await run_in_memory(chain(10, ainc), 0, executor, "run-2")
        finally:
            loop.set_task_factory(None)

    snapshot = asyncio.run(main())
    assert snapshot.output == 10
    assert len(created) == 10, created


async def _loop_calls_per_run(workflow: Workflow) -> dict[str, int]:
    """How often a run without persistence asks the event loop to run or time something."""
    loop = asyncio.get_running_loop()
    counts = dict.fromkeys(("call_soon", "call_soon_threadsafe", "call_later", "call_at"), 0)
    for name in counts:
        original = getattr(loop, name)

        def counting(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kw)

        setattr(loop, name, counting)  # instance attributes: asyncio's futures call these too
    executor = LocalExecutor()
    try:
        snapshot = await run_in_memory(workflow, 0, executor, "run-3")
    finally:
        executor.close()
    assert snapshot.output == len(workflow.tasks)
    return counts


def test_a_step_costs_two_turns_of_the_event_loop_and_no_timer() -> None:
    # Each step used to add one more turn (a done callback that woke the runner), and
    # two timers (the runner's wait and an asyncio.timeout scope even without a timeout).
    short, long = (
        asyncio.run(_loop_calls_per_run(chain(5, ainc))),
        asyncio.run(_loop_calls_per_run(chain(25, ainc))),
    )
    extra = {name: long[name] - short[name] for name in short}
    assert extra == {"call_soon": 2 * 20, "call_soon_threadsafe": 0, "call_later": 0, "call_at": 0}


def test_a_sync_step_comes_back_from_its_thread_with_one_wake_up() -> None:
    short, long = (
        asyncio.run(_loop_calls_per_run(chain(5))),
        asyncio.run(_loop_calls_per_run(chain(25))),
    )
    extra = {name: long[name] - short[name] for name in short}
    assert extra == {"call_soon": 3 * 20, "call_soon_threadsafe": 20, "call_later": 0, "call_at": 0}
