"""``Worker``: claims runnable instances from a shared backend and runs them.

Run it in the background of a sync program (``worker.start(workflows)`` ->
``WorkerHandle``, on the loop thread behind the sync API) or inside an asyncio app
(``await worker.run(workflows)``). Several workers, in one process or many,
share the work through claims with leases: a worker that dies leaves its instances to
the others once the lease (``claim_ttl``) expires.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from sayiir_core.backends.base import Backend, Claim, InstanceRecord
from sayiir_core.backends.step_queue import ClaimedStep, StepQueue
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import BackendError, LeaseLostError
from sayiir_core.runtime.engine import Engine, EventListener, check_definition
from sayiir_core.runtime.executor import Executor, LocalExecutor
from sayiir_core.runtime.loop_thread import loop_of_sync_api, submit
from sayiir_core.runtime.runner import ParkPolicy
from sayiir_core.runtime.shared_steps import SharingExecutor
from sayiir_core.runtime.step_runner import run_shared_step
from sayiir_core.status import Status
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.worker")


class Worker:
    """A pool of instance runners over one backend.

    ``concurrency`` bounds the instances run at once; ``poll_interval`` is how long an
    idle worker waits before looking for work again; ``claim_ttl`` is the lease, renewed
    every ``claim_ttl / 3`` while an instance runs.

    ``share_steps`` (on backends with a step queue: memory, PostgreSQL): when an
    instance has several steps ready at once (fork branches, ``map`` items), the worker
    runs one and queues the rest, so every idle worker helps; ``False`` runs them all
    here. ``concurrency`` then also bounds the shared steps this worker runs at once.
    """

    def __init__(
        self,
        worker_id: str,
        backend: Backend,
        *,
        poll_interval: float = 1.0,
        claim_ttl: float = 300.0,
        concurrency: int = 8,
        codec: Codec = DEFAULT_CODEC,
        executor: Executor | None = None,
        on_event: EventListener | None = None,
        share_steps: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if poll_interval <= 0 or claim_ttl <= 0:
            raise ValueError("poll_interval and claim_ttl must be positive")
        self.worker_id = worker_id
        self.backend = backend
        self.poll_interval = poll_interval
        self.claim_ttl = claim_ttl
        self.concurrency = concurrency
        self._codec = codec
        self._executor = executor
        self._on_event = on_event
        self.share_steps = share_steps
        # Retries due within a poll interval are waited for in process; longer back-offs
        # park the instance so it does not hold a concurrency slot.
        self._park = ParkPolicy(delays=True, signals=True, retries_longer_than=poll_interval)

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, concurrency={self.concurrency})"

    def start(self, workflows: Iterable[Workflow]) -> WorkerHandle:
        """Run the worker in the background, on the loop thread behind the sync API."""
        handle = WorkerHandle(self, list(workflows))
        handle._start()
        return handle

    async def run(
        self, workflows: Iterable[Workflow], *, stop: asyncio.Event | None = None
    ) -> None:
        """Claim and run instances until ``stop`` is set; then finish the running steps.

        On stop, running instances finish the steps already started, write them and
        release their claims; nothing new starts. Until its own instances are done the
        worker still runs the shared steps they are waiting for.
        """
        registry = {workflow.workflow_id: workflow for workflow in workflows}
        if not registry:
            raise ValueError("a worker needs at least one workflow")
        definitions = {wf_id: wf.definition_hash for wf_id, wf in registry.items()}
        stop = stop or asyncio.Event()
        local = self._executor or LocalExecutor(codec=self._codec)
        queue = self._step_queue()
        executor: Executor = local
        if queue is not None:
            executor = SharingExecutor(
                local, queue, definitions, codec=self._codec, poll_interval=self.poll_interval
            )
        engine = Engine(
            self.backend,
            codec=self._codec,
            executor=executor,
            owner_id=self.worker_id,
            lease_ttl=self.claim_ttl,
            on_event=self._on_event,
        )
        await engine.open()
        # Running tasks, each with the instance it works for.
        instances: dict[asyncio.Task[None], str] = {}
        steps: dict[asyncio.Task[None], str] = {}
        slot_freed = asyncio.Event()

        def spawn(
            tasks: dict[asyncio.Task[None], str], work: Coroutine[Any, Any, None], of: str
        ) -> None:
            task = asyncio.create_task(work, name=f"sayiir-worker:{of}")
            tasks[task] = of
            task.add_done_callback(lambda done: tasks.pop(done, None))
            task.add_done_callback(lambda _: slot_freed.set())

        try:
            while not (stop.is_set() and not instances):
                free = 0 if stop.is_set() else self.concurrency - len(instances)
                free_steps = self.concurrency - len(steps) if queue is not None else 0
                claims = await self._claim(definitions, free) if free > 0 else []
                for claim in claims:
                    work = self._run_one(engine, registry, claim, stop)
                    spawn(instances, work, claim.instance.record.instance_id)
                shared: list[ClaimedStep] = []
                if queue is not None and free_steps > 0:
                    # Once stopping, only the steps its own instances wait for.
                    mine = set(instances.values()) if stop.is_set() else None
                    shared = await self._claim_steps(queue, definitions, free_steps, mine)
                    for step in shared:
                        work = self._run_step(queue, local, registry, step)
                        spawn(steps, work, step.ticket.ref.instance_id)
                if (claims and len(claims) == free) or (shared and len(shared) == free_steps):
                    continue  # there may be more work than free slots: look again at once
                slot_freed.clear()
                await self._idle(
                    stop,
                    slot_freed,
                    wait_for_work=free > len(claims) or free_steps > len(shared),
                )
            if instances or steps:
                await asyncio.gather(*instances, *steps, return_exceptions=True)
        finally:
            for task in (*instances, *steps):
                task.cancel()
            if self._executor is None:
                local.close()

    def _step_queue(self) -> StepQueue | None:
        if self.share_steps and isinstance(self.backend, StepQueue):
            return self.backend
        return None

    async def _claim_steps(
        self,
        queue: StepQueue,
        definitions: dict[str, str],
        limit: int,
        instances: set[str] | None,
    ) -> list[ClaimedStep]:
        try:
            return await queue.claim_steps(
                self.worker_id,
                definitions,
                self.claim_ttl,
                time.time(),
                limit,
                instances=instances,
            )
        except Exception:
            logger.exception("worker %s: claiming shared steps failed; retrying", self.worker_id)
            return []

    async def _run_step(
        self,
        queue: StepQueue,
        executor: Executor,
        registry: dict[str, Workflow],
        step: ClaimedStep,
    ) -> None:
        try:
            await run_shared_step(
                step,
                queue=queue,
                executor=executor,
                registry=registry,
                codec=self._codec,
                worker_id=self.worker_id,
                ttl=self.claim_ttl,
            )
        except Exception:
            ref = step.ticket.ref
            logger.exception(
                "worker %s: shared step %r of %r stopped with an error; its lease will lapse",
                self.worker_id,
                ref.step_key,
                ref.instance_id,
            )

    async def _claim(self, definitions: dict[str, str], limit: int) -> list[Claim]:
        try:
            claims = await self.backend.claim_next(
                self.worker_id, definitions, self.claim_ttl, time.time(), limit
            )
        except Exception:
            logger.exception("worker %s: claiming failed; retrying", self.worker_id)
            return []
        for claim in claims:
            record = claim.instance.record
            logger.info(
                "[%s] claimed (workflow %s, was %s)",
                record.instance_id,
                record.workflow_id,
                record.status.value,
            )
        return claims

    async def _idle(
        self, stop: asyncio.Event, slot_freed: asyncio.Event, *, wait_for_work: bool
    ) -> None:
        """Wait for a stop, a free slot, or (with slots free) new work or the poll interval."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(slot_freed.wait())]
        if not stop.is_set():  # once stopping, only the last instances' steps matter
            waiters.append(asyncio.ensure_future(stop.wait()))
        if wait_for_work:
            waiters.append(asyncio.ensure_future(self.backend.wait_for_work(self.poll_interval)))
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _run_one(
        self,
        engine: Engine,
        registry: dict[str, Workflow],
        claim: Claim,
        stop: asyncio.Event,
    ) -> None:
        record = claim.instance.record
        workflow = registry[record.workflow_id]
        try:
            check_definition(workflow, record, allow_change=False)
            with _taking_over(engine.executor, record):
                await engine.run_claimed(workflow, claim, self._park, stop=stop)
        except LeaseLostError as error:
            logger.warning("worker %s: %s", self.worker_id, error)
        except BackendError:
            logger.exception(
                "worker %s: storage failed while running %r; handing it back",
                self.worker_id,
                record.instance_id,
            )
            await self._hand_back(engine, claim, stop)
        except Exception:
            logger.exception(
                "worker %s: instance %r stopped with an error", self.worker_id, record.instance_id
            )

    async def _hand_back(self, engine: Engine, claim: Claim, stop: asyncio.Event) -> None:
        """Release the claim once storage answers again, so any worker can go on at once.

        Without this the instance would wait for its lease (``claim_ttl``) to run out.
        Gives up when the lease would have expired anyway, or on stop.
        """
        instance_id = claim.instance.record.instance_id
        deadline = time.monotonic() + self.claim_ttl
        pause = min(0.5, self.poll_interval)
        while time.monotonic() < deadline and not stop.is_set():
            try:
                await engine.release(instance_id, claim.token)
            except BackendError:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            logger.info("[%s] handed back after a storage failure", instance_id)
            return


def _taking_over(
    executor: Executor, record: InstanceRecord
) -> contextlib.AbstractContextManager[None]:
    """Route the steps of an instance another owner was running through the step queue.

    Only ``running`` instances can have shared steps in flight: a pending one never ran,
    and a parked or paused one waited for its running steps before it parked.
    """
    if isinstance(executor, SharingExecutor) and record.status is Status.RUNNING:
        return executor.taking_over(record.instance_id)
    return contextlib.nullcontext()


class WorkerHandle:
    """A worker running on the process's sayiir loop thread: ``shutdown()`` then ``join()``.

    It shares that loop with the sync API (``WorkflowClient``, ``run_durable_workflow``),
    so one backend object, whose connection pool belongs to one loop, serves both.
    """

    def __init__(self, worker: Worker, workflows: list[Workflow]) -> None:
        self._worker = worker
        self._workflows = workflows
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._future: concurrent.futures.Future[None] | None = None
        self.error: BaseException | None = None

    def _start(self) -> None:
        self._future = submit(self._serve())
        self._started.wait()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._worker.run(self._workflows, stop=self._stop)
        except BaseException as error:
            self.error = error
            logger.exception("worker %s crashed", self._worker.worker_id)
            raise

    def shutdown(self) -> None:
        """Ask the worker to stop; running steps finish and their claims are released."""
        stop = self._stop
        if stop is not None:
            loop_of_sync_api().call_soon_threadsafe(stop.set)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker has stopped (or ``timeout`` seconds passed)."""
        if self._future is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, Exception):
            self._future.result(timeout)

    def is_alive(self) -> bool:
        return self._future is not None and not self._future.done()
