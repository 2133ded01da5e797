"""What ``manage.py sayiir worker`` runs: a ``Worker`` on the Django database, in the foreground.

The first SIGINT or SIGTERM stops it gracefully: running steps finish, are checkpointed
and their claims released, so another worker continues at once. A second one stops it
without waiting (exit code 130); the interrupted steps then run again elsewhere once
their lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sayiir_core import HistoryEvent, Workflow
from sayiir_core.runtime import Worker, default_owner_id
from sayiir_django.backend import DjangoBackend
from sayiir_django.executor import DjangoExecutor

logger = logging.getLogger("sayiir.django")

EXIT_FORCED = 130
_STEP_ENDS = frozenset({"task_completed", "task_failed"})
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(message)s"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    using: str
    concurrency: int
    poll_interval: float
    claim_ttl: float
    worker_id: str | None = None
    max_steps: int | None = None


def run_worker(workflows: Sequence[Workflow], options: WorkerOptions) -> int:
    """Run until SIGINT/SIGTERM (or ``max_steps`` steps); returns the exit code."""
    library = logging.getLogger("sayiir")
    handler: logging.Handler | None = None
    if not library.handlers:  # a project whose LOGGING configures "sayiir" keeps its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        library.addHandler(handler)
        library.setLevel(logging.INFO)
    try:
        return asyncio.run(_serve(list(workflows), options))
    finally:
        if handler is not None:
            library.removeHandler(handler)


async def _serve(workflows: list[Workflow], options: WorkerOptions) -> int:
    worker_id = options.worker_id or default_owner_id()
    backend = DjangoBackend(options.using, max_threads=options.concurrency + 2)
    executor = DjangoExecutor(max_threads=options.concurrency)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    forced = False
    main = asyncio.current_task()

    def request_stop(reason: str) -> None:
        nonlocal forced
        if not stop.is_set():
            logger.info("%s: finishing running steps, then stopping (again to force)", reason)
            stop.set()
        elif not forced and main is not None:
            forced = True
            main.cancel()

    restore = _on_signals(loop, request_stop)
    try:
        # Open first, so a database without the tables fails once, clearly.
        await backend.open()
        worker = Worker(
            worker_id,
            backend,
            concurrency=options.concurrency,
            poll_interval=options.poll_interval,
            claim_ttl=options.claim_ttl,
            executor=executor,
            on_event=_step_counter(loop, options.max_steps, request_stop),
        )
        logger.info(
            "worker %s started: workflows %s; database %r; concurrency %d",
            worker_id,
            ", ".join(workflow.workflow_id for workflow in workflows),
            options.using,
            options.concurrency,
        )
        await worker.run(workflows, stop=stop)
    except asyncio.CancelledError:
        if not forced:
            raise
        logger.warning("worker %s stopped without waiting for running steps", worker_id)
        return EXIT_FORCED
    finally:
        restore()
        executor.close()
        await backend.close()
    logger.info("worker %s stopped", worker_id)
    return 0


def _step_counter(
    loop: asyncio.AbstractEventLoop, max_steps: int | None, request_stop: Callable[[str], None]
) -> Callable[[str, HistoryEvent], None]:
    """Log each step that ends; ask for a stop after ``max_steps`` of them."""
    done = 0

    def on_event(instance_id: str, event: HistoryEvent) -> None:
        nonlocal done
        if event.kind not in _STEP_ENDS:
            return
        logger.info("[%s] %s %s", instance_id, event.step_key, event.kind.removeprefix("task_"))
        done += 1
        if max_steps is not None and done == max_steps:
            loop.call_soon_threadsafe(request_stop, f"{max_steps} steps done")

    return on_event


def _on_signals(
    loop: asyncio.AbstractEventLoop, callback: Callable[[str], None]
) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``callback`` on the loop; returns the undo function."""
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, callback, f"{signum.name} received")
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        installed.append(signum)

    def restore(*_: Any) -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return restore
