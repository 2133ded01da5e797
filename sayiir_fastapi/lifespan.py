"""What one run of ``Sayiir.lifespan`` holds: the backend, the client, the worker tasks.

Startup opens the backend before the app takes requests, so a wrong URL or an
unreachable database fails the startup once, clearly. Shutdown asks the workers to stop
claiming; running steps get a grace period to finish and checkpoint (their claims are
then released, so another process goes on at once); what is still running after it is
cancelled and runs again elsewhere when its lease expires. Only a backend this module
created is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence

from sayiir_core import AsyncWorkflowClient, Backend, Codec, Worker, Workflow, backend_from_url
from sayiir_fastapi.events import EventHub

logger = logging.getLogger("sayiir.fastapi")


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
        events: EventHub,
    ) -> None:
        self.backend = backend
        self.owns_backend = owns_backend
        self.client = client
        self.worker_ids = [worker.worker_id for worker in workers]
        self._tasks = list(tasks)
        self._stop_event = stop_event
        self._events = events

    async def stop(self, grace: float) -> None:
        """Stop the workers (``grace`` seconds for running steps), then close what we opened."""
        try:
            await self._stop_workers(grace)
        finally:
            self._events.wake_all()
            if self.owns_backend:
                await self.backend.close()

    async def _stop_workers(self, grace: float) -> None:
        self._stop_event.set()
        if not self._tasks:
            return
        _, still_running = await asyncio.wait(self._tasks, timeout=grace)
        if still_running:
            logger.warning(
                "%d worker(s) still had steps running %ss after shutdown began; cancelling "
                "them (those steps run again once their lease expires)",
                len(still_running),
                grace,
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
    client = AsyncWorkflowClient(opened, codec=codec)
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
    tasks = []
    for worker in pool:
        task = asyncio.create_task(
            worker.run(workflows, stop=stop_event), name=f"sayiir-worker:{worker.worker_id}"
        )
        task.add_done_callback(_log_crash)
        tasks.append(task)
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
        events=events,
    )


def _log_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("sayiir worker %s crashed", task.get_name(), exc_info=error)
