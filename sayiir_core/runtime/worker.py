"""``Worker``: claims runnable instances from a shared backend and runs them.

Run it in the background of a sync program (``worker.start(workflows)`` ->
``WorkerHandle``, on the loop thread behind the sync API) or inside an asyncio app
(``await worker.run(workflows)``). Several workers, in one process or many,
share the work through claims with leases: a worker that dies leaves its instances to
the others once the lease (``claim_ttl``) expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from sayiir_core.backends.base import Backend, Claim
from sayiir_core.backends.step_queue import ClaimedStep, StepQueue
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import BackendError, LeaseLostError
from sayiir_core.runtime.checks import require_backend, require_workflows
from sayiir_core.runtime.durable_runner import DurableRunner, check_definition
from sayiir_core.runtime.executor import Executor, LocalExecutor, safe_str
from sayiir_core.runtime.history import EventListener
from sayiir_core.runtime.runner import ParkPolicy
from sayiir_core.runtime.shared_steps import SharingExecutor
from sayiir_core.runtime.step_runner import run_claimed_step
from sayiir_core.runtime.storage_health import StorageHealth, one_line
from sayiir_core.runtime.worker_handle import WorkerHandle
from sayiir_core.runtime.worker_intake import WorkerIntake
from sayiir_core.runtime.worker_mismatches import MismatchReporter, taking_over
from sayiir_core.runtime.worker_release import RELEASE_WITHIN, abandon, hand_back, release_later
from sayiir_core.telemetry.gauges import report_backend_stats
from sayiir_core.telemetry.instances import count_step_takeovers, count_takeovers
from sayiir_core.telemetry.logs import InstanceLogger
from sayiir_core.workflow.workflow import Workflow

__all__ = ["RELEASE_WITHIN", "Worker", "WorkerHandle"]

logger = logging.getLogger("sayiir.worker")

_Of = TypeVar("_Of")  # what a running task of the worker works for


class Worker:
    """A pool of instance runners over one backend.

    ``concurrency`` bounds the instances run at once; ``poll_interval`` is how long an
    idle worker waits before looking for work again; ``claim_ttl`` is the lease, renewed
    every ``claim_ttl / 3`` while an instance runs.

    The worker uses ``backend`` and never closes it: whoever created it does, after
    the worker stopped (``async with backend:`` around ``await worker.run(...)``).

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
        self.backend = require_backend(backend, "Worker(backend=...)")
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
        # One line when storage is lost and one when it is back, not one per poll.
        self._storage = StorageHealth(logger, f"worker {worker_id}")
        self._paused_claims = False
        self._intake: WorkerIntake | None = None

    @property
    def intake(self) -> WorkerIntake | None:
        """While ``run`` runs: where a client on the same event loop hands new instances
        straight to this worker (see ``runtime/worker_intake.py``); else ``None``."""
        return self._intake

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, concurrency={self.concurrency})"

    def start(self, workflows: Iterable[Workflow], *, grace: float | None = None) -> WorkerHandle:
        """Run the worker in the background, on the loop thread behind the sync API.

        ``grace``: how long ``shutdown()`` lets running steps finish (see ``run``).
        """
        # Checked here, in the caller: a wrong item must not crash later in the background.
        _check_grace(grace)
        handle = WorkerHandle(self, require_workflows(workflows, "Worker.start()"), grace=grace)
        handle._start()
        return handle

    async def run(
        self,
        workflows: Iterable[Workflow],
        *,
        stop: asyncio.Event | None = None,
        grace: float | None = None,
    ) -> None:
        """Claim and run instances until ``stop`` is set; then finish the running steps.

        On stop, running instances finish the steps already started, write them and
        release their claims; nothing new starts. Until its own instances are done the
        worker still runs the shared steps they are waiting for.

        ``grace`` bounds that drain: steps still running ``grace`` seconds after
        ``stop`` was set are cancelled and their claims (instances and shared steps)
        released at once, so another worker takes them over now rather than after the
        lease (``claim_ttl``). Those steps run again there; nothing they did is
        checkpointed here. ``None`` waits for them however long they take.
        """
        _check_grace(grace)
        checked = require_workflows(workflows, "Worker.run()")
        registry = {workflow.workflow_id: workflow for workflow in checked}
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
        runner = DurableRunner(
            self.backend,
            codec=self._codec,
            executor=executor,
            owner_id=self.worker_id,
            lease_ttl=self.claim_ttl,
            on_event=self._on_event,
        )
        mismatches = MismatchReporter(self.backend, self.worker_id, registry)
        # Running tasks, each with the instance it works for.
        instances: dict[asyncio.Task[None], str] = {}
        steps: dict[asyncio.Task[None], ClaimedStep] = {}
        slot_freed = asyncio.Event()
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None  # loop time when the grace after a stop runs out
        gauge_counts = report_backend_stats(self.backend)  # read on this loop, for the gauges

        def spawn(
            tasks: dict[asyncio.Task[None], _Of],
            work: Coroutine[Any, Any, None],
            of: _Of,
            name: str,
        ) -> None:
            task = asyncio.create_task(work, name=f"sayiir-worker:{name}")
            tasks[task] = of
            task.add_done_callback(lambda done: tasks.pop(done, None))
            task.add_done_callback(lambda _: slot_freed.set())

        def free_slots() -> int:
            if stop.is_set() or self._paused_claims:
                return 0
            return self.concurrency - len(instances)

        def hand_over(claim: Claim) -> None:
            instance_id = claim.instance.record.instance_id
            if not claiming_loop_runs:  # created as this worker's run ended
                release_later(runner, claim)
                return
            work = self._run_one(runner, registry, claim, stop, fresh=True)
            spawn(instances, work, instance_id, instance_id)

        intake = WorkerIntake(
            self.worker_id,
            self.claim_ttl,
            definitions,
            start=hand_over,
            free_slots=free_slots,
            settled=slot_freed.set,
        )
        # Open from the first step of run() on: a client can hand over from then.
        self._intake = intake
        claiming_loop_runs = True
        try:
            await runner.open()
            while not (stop.is_set() and not instances and not intake.reserved):
                if stop.is_set():
                    intake.close()
                if stop.is_set() and grace is not None:
                    give_up_at = give_up_at if give_up_at is not None else loop.time() + grace
                    if loop.time() >= give_up_at:
                        break
                free = 0 if stop.is_set() else self.concurrency - len(instances) - intake.reserved
                if free > 0 and self._threads_stuck(local):
                    free = 0  # a new instance's sync steps would only queue behind hung ones
                free_steps = self.concurrency - len(steps) if queue is not None else 0
                intake.claim_starts(max(free, 0))
                try:
                    claims = await self._claim(definitions, free) if free > 0 else []
                finally:
                    intake.claim_ends()
                for claim in claims:
                    instance_id = claim.instance.record.instance_id
                    work = self._run_one(runner, registry, claim, stop)
                    earlier = [task for task, of in instances.items() if of == instance_id]
                    if earlier:  # still running here: see _run_after
                        work = self._run_after(earlier, runner, claim, work)
                    spawn(instances, work, instance_id, instance_id)
                shared: list[ClaimedStep] = []
                if queue is not None and free_steps > 0:
                    # Once stopping, only the steps its own instances wait for.
                    mine = set(instances.values()) if stop.is_set() else None
                    shared = await self._claim_steps(queue, definitions, free_steps, mine)
                    for step in shared:
                        work = self._run_step(queue, local, registry, step)
                        spawn(steps, work, step, step.ticket.ref.instance_id)
                if (claims and len(claims) == free) or (shared and len(shared) == free_steps):
                    continue  # there may be more work than free slots: look again at once
                if free > len(claims):  # idle slots: say which instances it will not run
                    await mismatches.report_now_and_then()
                slot_freed.clear()
                # A slot freed only matters when slots held claims back (or to see the
                # last instance end while stopping): with slots free, looking again at
                # every finish would cost two statements each.
                steps_full = queue is not None and free_steps <= 0
                slots_held_back = stop.is_set() or free <= 0 or steps_full
                await self._idle(
                    stop,
                    slot_freed if slots_held_back else None,
                    wait_for_work=free > len(claims) or free_steps > len(shared),
                    until=give_up_at,
                )
            # Left: shared steps run for other instances, or all, if the grace ran out.
            claiming_loop_runs = False
            pending = {*instances, *steps}
            if grace is not None and give_up_at is None:
                give_up_at = loop.time() + grace
            left = None if give_up_at is None else max(0.0, give_up_at - loop.time())
            if pending and left != 0.0:
                _, pending = await asyncio.wait(pending, timeout=left)
            if pending:
                await abandon(
                    self.worker_id,
                    self.backend,
                    runner,
                    queue,
                    {task: of for task, of in instances.items() if task in pending},
                    {task: of for task, of in steps.items() if task in pending},
                )
        finally:
            claiming_loop_runs = False
            intake.close()
            if self._intake is intake:
                self._intake = None
            gauge_counts.stop()
            for task in (*instances, *steps):
                task.cancel()
            if self._executor is None:
                local.close()

    def _threads_stuck(self, executor: Executor) -> bool:
        """Whether to stop claiming: every sync task thread hung; logged once per episode."""
        stuck = isinstance(executor, LocalExecutor) and executor.threads_stuck
        if stuck and not self._paused_claims:
            logger.warning(
                "worker %s: every sync task thread has been busy for a long time (hung "
                "tasks?); it stops claiming new instances until one returns",
                self.worker_id,
            )
        elif self._paused_claims and not stuck:
            logger.warning("worker %s: a sync task thread is free again; claiming", self.worker_id)
        self._paused_claims = stuck
        return stuck

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
            claimed = await queue.claim_steps(
                self.worker_id,
                definitions,
                self.claim_ttl,
                time.time(),
                limit,
                instances=instances,
            )
        except Exception as error:
            self._storage.failed(error)
            return []
        count_step_takeovers(claimed)
        return claimed

    async def _run_step(
        self,
        queue: StepQueue,
        executor: Executor,
        registry: dict[str, Workflow],
        step: ClaimedStep,
    ) -> None:
        try:
            await run_claimed_step(
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
            InstanceLogger(logger, ref.instance_id, workflow_id=step.ticket.workflow_id).exception(
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
        except Exception as error:
            self._storage.failed(error)
            return []
        self._storage.worked()
        count_takeovers(claims)
        for claim in claims:
            record = claim.instance.record
            InstanceLogger(logger, record.instance_id, workflow_id=record.workflow_id).info(
                "[%s] claimed (workflow %s, was %s)",
                record.instance_id,
                record.workflow_id,
                record.status.reported,
            )
        return claims

    async def _idle(
        self,
        stop: asyncio.Event,
        slot_freed: asyncio.Event | None,
        *,
        wait_for_work: bool,
        until: float | None,
    ) -> None:
        """Wait for a stop, a free slot, or (with slots free) new work or the poll interval.

        ``slot_freed``: ``None`` when a slot freed is no reason to look again.
        ``until`` (loop time): the end of the grace after a stop, when waiting ends too.
        """
        waiters: list[asyncio.Future[Any]] = []
        if slot_freed is not None:
            waiters.append(asyncio.ensure_future(slot_freed.wait()))
        if not stop.is_set():  # once stopping, only the last instances' steps matter
            waiters.append(asyncio.ensure_future(stop.wait()))
        if wait_for_work:
            waiters.append(asyncio.ensure_future(self.backend.wait_for_work(self.poll_interval)))
        timeout = self.poll_interval
        if until is not None:
            timeout = max(0.0, min(timeout, until - asyncio.get_running_loop().time()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                error = None if not waiter.done() or waiter.cancelled() else waiter.exception()
                if error is not None:  # wait_for_work failed: retrieved, reported once
                    self._storage.failed(error)

    async def _run_after(
        self,
        earlier: list[asyncio.Task[None]],
        runner: DurableRunner,
        claim: Claim,
        work: Coroutine[Any, Any, None],
    ) -> None:
        """Run ``work`` for a claim of an instance this worker was still running, if it holds.

        An instance that parked here and got a signal right away is claimed twice: by
        the claim loop (the signal made it runnable) and by its own run, which looks
        for a signal after parking and takes the instance back. Run at once, the two
        would run it side by side until one is fenced. So this one waits for the
        earlier run, then goes on only if its claim is still the current one.
        """
        instance_id = claim.instance.record.instance_id
        try:
            await asyncio.wait(earlier)
            record = await self.backend.get_record(instance_id)
        except BaseException:
            work.close()
            raise
        if record is None or record.owner != self.worker_id or record.claim_token != claim.token:
            work.close()  # the earlier run took it back (a newer claim) and went on
            InstanceLogger(logger, instance_id).debug(
                "[%s] claimed twice here; the earlier run went on", instance_id
            )
            return
        await work

    async def _run_one(
        self,
        runner: DurableRunner,
        registry: dict[str, Workflow],
        claim: Claim,
        stop: asyncio.Event,
        *,
        fresh: bool = False,
    ) -> None:
        """Run one claimed instance; ``fresh``: handed over as it was created (intake)."""
        record = claim.instance.record
        workflow = registry[record.workflow_id]
        try:
            check_definition(workflow, record, allow_change=False)
            # A fresh instance is stored "running" yet never ran anywhere: no takeover.
            with contextlib.nullcontext() if fresh else taking_over(runner.executor, record):
                await runner.run_claimed(workflow, claim, self._park, stop=stop)
        except LeaseLostError as error:
            logger.warning("worker %s: %s", self.worker_id, error)
        except BackendError as error:
            InstanceLogger(logger, record.instance_id, workflow_id=record.workflow_id).warning(
                "[%s] storage failed while worker %s ran it (%s); handing it back",
                record.instance_id,
                self.worker_id,
                one_line(safe_str(error)),
            )
            await hand_back(
                runner, claim, stop, claim_ttl=self.claim_ttl, poll_interval=self.poll_interval
            )
        except Exception:
            InstanceLogger(logger, record.instance_id, workflow_id=record.workflow_id).exception(
                "worker %s: instance %r stopped with an error", self.worker_id, record.instance_id
            )


def _check_grace(grace: float | None) -> None:
    # Written as "not ok" so that NaN is refused too.
    if grace is not None and not grace >= 0:
        raise ValueError(f"grace must be >= 0 seconds or None, got {grace!r}")
