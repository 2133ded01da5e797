"""What one run of ``Sayiir.lifespan`` holds: the backend, the client, the worker tasks.

Startup opens the backend before the app takes requests, so a wrong URL or an
unreachable database fails the startup once, clearly. Shutdown asks the workers to stop
claiming; running steps get a grace period to finish and checkpoint (their claims are
then released, so another process goes on at once); steps still running after it are
cancelled and their claims released too, so another process runs them again at once
(``Worker.run(grace=...)``). Only a backend this module created is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence

from sayiir_core import AsyncWorkflowClient, Backend, Codec, Worker, Workflow, backend_from_url
from sayiir_core.runtime.worker import RELEASE_WITHIN
from sayiir_fastapi.events import EventHub

logger = logging.getLogger("sayiir.fastapi")

# Beyond the grace and the releases: a worker that has not returned by then is stuck.
STOP_MARGIN = 5.0


class Running:
    """The resources of one lifespan run."""

    def __init__(
        self,
        backend: Backend,
        *,
        owns_backend: bool,
        client: AsyncWorkflowClient,
        workers: Sequence[Worker],
        tasks: Sequence[asyncio.Task[None]],
        stop_event: asyncio.Event,
        grace: float,
        events: EventHub,
    ) -> None:
        self.backend = backend
        self.grace = grace
        self.owns_backend = owns_backend
        self.client = client
        self.worker_ids = [worker.worker_id for worker in workers]
        self._tasks = list(tasks)
        self._stop_event = stop_event
        self._events = events

    async def stop(self) -> None:
        """Stop the workers (``grace`` seconds for running steps), then close what we opened."""
        try:
            await self._stop_workers()
        finally:
            self._events.wake_all()
            if self.owns_backend:
                await self.backend.close()

    async def _stop_workers(self) -> None:
        # The workers keep the grace themselves, then cancel what still runs and release
        # its claims; this bound only catches a worker that does not return at all.
        self._stop_event.set()
        if not self._tasks:
            return
        bound = self.grace + RELEASE_WITHIN + STOP_MARGIN
        _, still_running = await asyncio.wait(self._tasks, timeout=bound)
        if still_running:
            logger.warning(
                "%d worker(s) did not stop %ss after shutdown began; cancelling them (their "
                "steps run again once their lease expires)",
                len(still_running),
                bound,
            )
            for task in still_running:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def start(
    backend: str | Backend,
    *,
    workflows: Sequence[Workflow],
    workers: int,
    concurrency: int,
    poll_interval: float,
    claim_ttl: float,
    grace: float,
    codec: Codec,
    events: EventHub,
) -> Running:
    """Open the backend and start ``workers`` workers on the running loop."""
    owns_backend = isinstance(backend, str)
    opened: Backend = backend_from_url(backend) if isinstance(backend, str) else backend
    try:
        await opened.open()
    except BaseException:
        if owns_backend:
            await opened.close()
        raise
    stop_event = asyncio.Event()
    prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    pool = [
        Worker(
            f"{prefix}:fastapi-{index}",
            opened,
            concurrency=concurrency,
            poll_interval=poll_interval,
            claim_ttl=claim_ttl,
            codec=codec,
            on_event=events.publish,
        )
        for index in range(workers)
    ]
    # Submits from this app go straight to a worker here while one has a free slot.
    client = AsyncWorkflowClient(opened, codec=codec, workflows=workflows, local_workers=pool)
    tasks = []
    for worker in pool:
        task = asyncio.create_task(
            worker.run(workflows, stop=stop_event, grace=grace),
            name=f"sayiir-worker:{worker.worker_id}",
        )
        task.add_done_callback(_log_crash)
        tasks.append(task)
    # Let each worker take its first step, which opens its intake: the first request
    # after startup can then hand its instance over already.
    await asyncio.sleep(0)
    if pool:
        logger.info(
            "sayiir: %d in-process worker(s) serving %s",
            len(pool),
            ", ".join(workflow.workflow_id for workflow in workflows),
        )
    return Running(
        opened,
        owns_backend=owns_backend,
        client=client,
        workers=pool,
        tasks=tasks,
        stop_event=stop_event,
        grace=grace,
        events=events,
    )


def _log_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("sayiir worker %s crashed", task.get_name(), exc_info=error)
