"""``WorkerHandle``: a ``Worker`` running in the background of a sync program.

``Worker.start(workflows)`` returns one; it runs the worker on the loop thread behind
the sync API (``sayiir_core.runtime.loop_thread``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sayiir_core.runtime.loop_thread import loop_of_sync_api, submit
from sayiir_core.workflow.workflow import Workflow

if TYPE_CHECKING:
    from sayiir_core.runtime.worker import Worker

logger = logging.getLogger("sayiir.worker")


class WorkerHandle:
    """A worker running on the process's sayiir loop thread: ``shutdown()`` then ``join()``.

    It shares that loop with the sync API (``WorkflowClient``, ``run_durable_workflow``),
    so one backend object, whose connection pool belongs to one loop, serves both.

    As a context manager, leaving the block shuts the worker down and waits for it::

        with Worker("w1", backend).start([order_flow]):
            client.submit(order_flow, "order-42", {"sku": "A1"})
            client.wait("order-42", timeout=60)
    """

    def __init__(
        self, worker: Worker, workflows: list[Workflow], *, grace: float | None = None
    ) -> None:
        self._worker = worker
        self._workflows = workflows
        self._grace = grace
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._future: concurrent.futures.Future[None] | None = None
        self._pid = os.getpid()
        self.error: BaseException | None = None

    def _start(self) -> None:
        self._future = submit(self._serve())
        self._started.wait()

    def _in_another_process(self) -> bool:
        # A handle inherited through os.fork(): its worker ran on the parent's loop
        # thread, which the child does not have. There is nothing to stop or wait for.
        return os.getpid() != self._pid

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._worker.run(self._workflows, stop=self._stop, grace=self._grace)
        except BaseException as error:
            self.error = error
            logger.exception("worker %s crashed", self._worker.worker_id)
            raise

    def shutdown(self) -> None:
        """Ask the worker to stop; running steps finish and their claims are released.

        With a ``grace`` given to ``start``, steps still running after it are cancelled
        and their claims released, for another worker to run them at once.
        """
        stop = self._stop
        if stop is not None and not self._in_another_process():
            loop_of_sync_api().call_soon_threadsafe(stop.set)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker has stopped (or ``timeout`` seconds passed)."""
        if self._future is None or self._in_another_process():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, Exception):
            self._future.result(timeout)

    def is_alive(self) -> bool:
        """Whether the worker runs; always ``False`` in a process forked after its start."""
        if self._in_another_process():
            return False
        return self._future is not None and not self._future.done()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.join()
