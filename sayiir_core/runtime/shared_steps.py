"""``SharingExecutor``: the orchestrator's side of the step queue (see ``step_queue.py``).

An instance whose runner asks for several steps at once (fork branches, ``map`` items)
runs the first of them here and publishes the others, so idle workers anywhere take
them. A chain asks for one step at a time and so never touches the queue: its steps
cost nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping

from sayiir_core.backends.step_queue import StepQueue, StepRef, StepResult, StepTicket
from sayiir_core.codec import Codec
from sayiir_core.errors import PayloadTooLargeError, SerializationError
from sayiir_core.runtime.executor import (
    Executor,
    TaskOutcome,
    TaskRequest,
    encode_or_raise,
)
from sayiir_core.runtime.runner import DEFAULT_PRIORITY
from sayiir_core.runtime.step_outcomes import outcome_of
from sayiir_core.runtime.storage_health import StorageHealth

logger = logging.getLogger("sayiir.worker")


class SharingExecutor:
    """Runs one step per instance at a time locally and queues the others for any worker.

    ``definitions`` maps each workflow id to the definition hash its steps are published
    under (a worker takes only steps of definitions it has). ``poll_interval`` bounds how
    long a finished shared step can go unnoticed if its wake-up is lost.
    """

    def __init__(
        self,
        local: Executor,
        queue: StepQueue,
        definitions: Mapping[str, str],
        *,
        codec: Codec,
        poll_interval: float,
    ) -> None:
        self._local = local
        self._queue = queue
        self._definitions = dict(definitions)
        self._codec = codec
        self._running_here: Counter[str] = Counter()
        self._taken_over: Counter[str] = Counter()
        self._publisher = _Publisher(queue)
        self._results = _ResultWatcher(queue, poll_interval)

    def close(self) -> None:
        self._local.close()

    @contextlib.contextmanager
    def taking_over(self, instance_id: str) -> Iterator[None]:
        """While it lasts, every step of the instance goes through the queue.

        For an instance taken over from another owner: its steps may be queued, running
        or finished there already, and publishing the same ``(step, attempt)`` again
        finds that row instead of running the step once more.
        """
        self._taken_over[instance_id] += 1
        try:
            yield
        finally:
            self._taken_over[instance_id] -= 1
            if not self._taken_over[instance_id]:
                del self._taken_over[instance_id]

    async def execute(self, request: TaskRequest) -> TaskOutcome:
        instance_id = request.instance_id
        share = self._running_here[instance_id] or instance_id in self._taken_over
        ticket = self._ticket(request) if share else None
        if ticket is None:
            return await self._run_here(request)
        try:
            await self._publisher.publish(ticket)
        except PayloadTooLargeError:
            return await self._run_here(request)  # its input cannot be queued: run it here
        return outcome_of(await self._results.wait(ticket.ref), self._codec)

    async def _run_here(self, request: TaskRequest) -> TaskOutcome:
        self._running_here[request.instance_id] += 1
        try:
            return await self._local.execute(request)
        finally:
            self._running_here[request.instance_id] -= 1
            if not self._running_here[request.instance_id]:
                del self._running_here[request.instance_id]

    def _ticket(self, request: TaskRequest) -> StepTicket | None:
        definition = self._definitions.get(request.workflow_id)
        if definition is None:
            return None
        try:
            payload = encode_or_raise(self._codec, request.input, f"input of {request.key!r}")
        except SerializationError:
            return None  # only this process can hand the value over: run it here
        return StepTicket(
            ref=StepRef(request.instance_id, request.key, request.attempt),
            workflow_id=request.workflow_id,
            definition_hash=definition,
            input=payload,
            priority=request.task.metadata.priority or DEFAULT_PRIORITY,
            now=time.time(),
        )


class _Publisher:
    """Publishes the tickets asked for in one loop iteration with one write."""

    def __init__(self, queue: StepQueue) -> None:
        self._queue = queue
        self._pending: list[StepTicket] = []
        self._sending: asyncio.Future[None] | None = None

    async def publish(self, ticket: StepTicket) -> None:
        self._pending.append(ticket)
        if self._sending is None:
            self._sending = asyncio.ensure_future(self._send())
        # Shielded: one step being cancelled must not cancel its siblings' write.
        await asyncio.shield(self._sending)

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the runner starts a batch in one go: let it all queue up
        batch, self._pending, self._sending = self._pending, [], None
        await self._queue.publish_steps(batch)


class _ResultWatcher:
    """One task per executor reads the outcomes of every shared step waited for."""

    def __init__(self, queue: StepQueue, poll_interval: float) -> None:
        self._queue = queue
        self._poll_interval = poll_interval
        self._waiting: dict[StepRef, asyncio.Future[StepResult]] = {}
        self._watching: asyncio.Task[None] | None = None
        self._storage = StorageHealth(logger, "reading shared step results")

    async def wait(self, ref: StepRef) -> StepResult:
        future = self._waiting.get(ref)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[ref] = future
        if self._watching is None or self._watching.done():
            self._watching = asyncio.create_task(self._watch(), name="sayiir-shared-steps")
        try:
            return await future
        finally:
            # Also when the runner cancels the step: nobody reads its outcome any more.
            self._waiting.pop(ref, None)

    async def _watch(self) -> None:
        while self._waiting:
            try:
                found = await self._queue.step_results(list(self._waiting))
            except Exception as error:
                self._storage.failed(error)
                found = {}
            else:
                self._storage.worked()
            for ref, result in found.items():
                future = self._waiting.pop(ref, None)
                if future is not None and not future.done():
                    future.set_result(result)
            if self._waiting:
                try:
                    await self._queue.wait_for_step_results(self._poll_interval)
                except Exception:  # no wake-ups for now: poll
                    await asyncio.sleep(self._poll_interval)
