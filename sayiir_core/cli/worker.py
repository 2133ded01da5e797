"""``sayiir worker``: a ``Worker`` in the foreground, logging to stderr, stopping cleanly.

The first SIGINT or SIGTERM sets the worker's stop event: running steps finish, are
checkpointed and their claims released, so another worker continues at once instead of
waiting for a lease to expire. With ``--grace SECONDS`` steps still running that long
after the signal are cancelled and their claims released too, so another worker runs
them again at once. A second signal stops without waiting (exit code 130); the
interrupted steps then run again elsewhere once their lease runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from sayiir_core.backends.base import Backend, HistoryEvent
from sayiir_core.backends.url import backend_from_url, redact
from sayiir_core.cli.common import database_url
from sayiir_core.cli.output import QUIET_KINDS, Symbols, describe_event, symbols_for
from sayiir_core.cli.targets import load_workflows
from sayiir_core.runtime.durable_runner import default_owner_id
from sayiir_core.runtime.worker import Worker
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.cli")

EXIT_FORCED = 130
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve the given workflows until SIGINT/SIGTERM."""
    workflows = load_workflows(list(args.targets))
    url = database_url(args)
    backend: Backend = backend_from_url(url)
    options = WorkerOptions(
        worker_id=args.worker_id or default_owner_id(),
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        claim_ttl=args.claim_ttl,
        backend_label=redact(url),
        share_steps=args.share_steps,
        grace=args.grace,
    )
    return run_worker(workflows, backend, options)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    worker_id: str
    concurrency: int
    poll_interval: float
    claim_ttl: float
    backend_label: str
    share_steps: bool = True
    # Seconds running steps get after a stop before they are cancelled and released.
    grace: float | None = None


def run_worker(workflows: Sequence[Workflow], backend: Backend, options: WorkerOptions) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code (0 after a graceful stop)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    # The "sayiir" logger also carries the library's own worker errors to the same stream.
    library_logger = logging.getLogger("sayiir")
    previous_level = library_logger.level
    library_logger.addHandler(handler)
    library_logger.setLevel(logging.INFO)
    try:
        return asyncio.run(_serve(list(workflows), backend, options))
    finally:
        library_logger.removeHandler(handler)
        library_logger.setLevel(previous_level)


async def _serve(workflows: list[Workflow], backend: Backend, options: WorkerOptions) -> int:
    # Open before starting so a bad database fails once, clearly, instead of every poll.
    await backend.open()
    worker = Worker(
        options.worker_id,
        backend,
        poll_interval=options.poll_interval,
        claim_ttl=options.claim_ttl,
        concurrency=options.concurrency,
        on_event=_event_logger(symbols_for(sys.stderr)),
        share_steps=options.share_steps,
    )
    stop = asyncio.Event()
    shutdown = _Shutdown(stop, asyncio.current_task())
    restore = _install_signal_handlers(asyncio.get_running_loop(), shutdown.request)
    logger.info(
        "worker %s started: workflows %s; backend %s; concurrency %d; polling every %ss%s",
        options.worker_id,
        ", ".join(workflow.workflow_id for workflow in workflows),
        options.backend_label,
        options.concurrency,
        options.poll_interval,
        "" if options.grace is None else f"; shutdown grace {options.grace}s",
    )
    try:
        await worker.run(workflows, stop=stop, grace=options.grace)
    except asyncio.CancelledError:
        if not shutdown.forced:
            raise
        logger.warning("worker %s stopped without waiting for running steps", options.worker_id)
        return EXIT_FORCED
    finally:
        restore()
        await backend.close()
    logger.info("worker %s stopped", options.worker_id)
    return 0


class _Shutdown:
    """First signal: graceful stop. Second: cancel the worker outright."""

    def __init__(self, stop: asyncio.Event, task: asyncio.Task[Any] | None) -> None:
        self._stop = stop
        self._task = task
        self.forced = False

    def request(self, signal_name: str) -> None:
        if not self._stop.is_set():
            logger.info(
                "%s received: finishing running steps, then stopping (send it again to force)",
                signal_name,
            )
            self._stop.set()
        elif self._task is not None and not self.forced:
            self.forced = True
            self._task.cancel()


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, callback: Callable[[str], None]
) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``callback`` on the loop; returns an undo function."""
    undo: list[Callable[[], object]] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, callback, signum.name)
            undo.append(functools.partial(loop.remove_signal_handler, signum))
        except NotImplementedError:
            # Windows event loops have no add_signal_handler: hop over from the handler.
            if threading.current_thread() is threading.main_thread():
                previous = signal.signal(signum, _thread_safe(loop, callback, signum.name))
                undo.append(functools.partial(signal.signal, signum, previous))

    def restore() -> None:
        for step in undo:
            step()

    return restore


def _thread_safe(
    loop: asyncio.AbstractEventLoop, callback: Callable[[str], None], name: str
) -> Callable[[int, FrameType | None], None]:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback, name)

    return handle


def _event_logger(marks: Symbols) -> Callable[[str, HistoryEvent], None]:
    """Log each durably written history event of the instances this worker runs."""

    def log(instance_id: str, event: HistoryEvent) -> None:
        if event.kind not in QUIET_KINDS:
            logger.info("[%s] %s", instance_id, describe_event(event, marks))

    return log
