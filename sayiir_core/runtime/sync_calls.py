"""Calling a sync task's function: on a task thread, or inline on a loop private to
its run (``caller_loop``); either way in a context of its own, seeing no event loop."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sayiir_core.runtime.caller_loop import on_caller_loop
from sayiir_core.runtime.context import TaskExecutionContext, set_task_context
from sayiir_core.runtime.loop_thread import submit as submit_to_loop_thread
from sayiir_core.telemetry.steps import attach_in_thread

if TYPE_CHECKING:
    from opentelemetry.context import Context


def run_inline(
    fn: Callable[..., Any],
    argument: Any,
    context: TaskExecutionContext,
    trace_context: Context | None,
) -> Any:
    # The step sees what it would on a task thread: no running event loop (it may call
    # asyncio.run, or the sync API, which then goes through the loop thread).
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        return call_sync_task(fn, argument, context, trace_context)
    finally:
        asyncio._set_running_loop(loop)


async def awaited(result: Any) -> Any:
    """What a sync task returned and is to be awaited, where it would be on the loop thread.

    On a loop private to one run, the coroutine goes to the sayiir loop thread: objects
    it uses (a client bound to a loop) may belong to that loop, as when every run was there.
    """
    if not on_caller_loop():
        return await result
    return await asyncio.wrap_future(submit_to_loop_thread(_await(result)))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def call_sync_task(
    fn: Callable[..., Any],
    argument: Any,
    context: TaskExecutionContext,
    trace_context: Context | None = None,
) -> Any:
    """``fn(argument)`` in a fresh context, where ``get_task_context()`` gives ``context``
    (the caller's context variables stay the caller's, on whatever thread this runs)."""

    def call() -> Any:
        set_task_context(context)
        # The fresh Context below starts without the step's span: carry it over, so the
        # task's own spans and logs nest under its step.
        attach_in_thread(trace_context)
        return fn(argument)

    return contextvars.Context().run(call)
