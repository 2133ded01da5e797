"""``DjangoExecutor``: steps run as Django expects of long-lived processes.

A worker lives for days; Django closes a request's connections when the request ends,
and nothing would close a worker's. So, as Django's own request cycle and Celery's
Django fix-up do, every sync step runs between two ``close_old_connections()`` calls,
in the thread that runs it: a connection past ``CONN_MAX_AGE``, or one that broke (a
restarted server, ``pg_terminate_backend``), is replaced before the step uses the ORM.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

from sayiir_core.runtime import Executor, LocalExecutor, TaskOutcome, TaskRequest


class DjangoExecutor:
    """An ``Executor`` that runs steps with ``inner`` (a ``LocalExecutor`` by default).

    Async steps are passed through unchanged: they use the ORM through
    ``sync_to_async``, whose threads Django manages.
    """

    def __init__(self, inner: Executor | None = None, *, max_threads: int | None = None) -> None:
        self._inner = inner if inner is not None else LocalExecutor(max_threads=max_threads)

    async def execute(self, request: TaskRequest) -> TaskOutcome:
        fn = request.task.fn
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - a callable object's own method
        ):
            return await self._inner.execute(request)
        task = dataclasses.replace(request.task, fn=with_fresh_connections(fn))
        return await self._inner.execute(dataclasses.replace(request, task=task))

    def close(self) -> None:
        self._inner.close()


def with_fresh_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` between two ``close_old_connections()`` calls, in the thread it runs in."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return run
