"""``DurableRunner``: runs instances in this process, checkpointing every step.

``run_durable_workflow``, ``resume_workflow`` and ``Worker`` run instances through it,
and so can an adapter that claims instances itself: ``run_claimed`` runs one claimed
instance until it finishes or parks, keeping its lease alive meanwhile. Submitting and
controlling instances is ``InstanceControl``'s part; a runner holds one as ``control``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from sayiir_core.backends.base import (
    Backend,
    BufferedSignal,
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstanceRecord,
    StepWrite,
)
from sayiir_core.backends.rules import committed_record
from sayiir_core.backends.step_queue import claim_if_free
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import DefinitionMismatchError, LeaseLostError
from sayiir_core.machine import CancelRequested, Event, PauseRequested, Snapshot, start
from sayiir_core.runtime.control import InstanceControl, refuse_another_workflow
from sayiir_core.runtime.convert import snapshot_from, status_from
from sayiir_core.runtime.executor import Executor
from sayiir_core.runtime.history import EventListener
from sayiir_core.runtime.lease_heartbeat import LeaseHeartbeat
from sayiir_core.runtime.runner import DURABLE_RUN, InstanceRunner, ParkPolicy
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.telemetry.instances import (
    InstanceObservation,
    count_takeover,
    observe_instance,
    tracing_on,
)
from sayiir_core.telemetry.otel import any_on
from sayiir_core.telemetry.propagation import stored_trace_context
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.workflow import Workflow

DEFAULT_LEASE_TTL = 60.0


def default_owner_id() -> str:
    """A process-unique claim owner: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DurableRunner:
    """Runs instances here under a claim, with a checkpoint after every step.

    ``executor`` runs the steps (the caller owns it and closes it); ``owner_id`` names
    this runner in claims and history; ``lease_ttl`` is the claim's lease, renewed every
    ``lease_ttl / 3`` while an instance runs. ``on_event(instance_id, event)`` is called
    after each history event is written. The backend is opened on first use (again in
    a forked process) and never closed here.

    Example (an adapter running an instance it claimed itself)::

        runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="node-1")
        status = await runner.run_claimed(workflow, claim, ParkPolicy(True, True))
    """

    def __init__(
        self,
        backend: Backend,
        *,
        executor: Executor,
        codec: Codec = DEFAULT_CODEC,
        conflict_policy: str | ConflictPolicy | None = None,
        owner_id: str | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Callable[[], float] = time.time,
        on_event: EventListener | None = None,
    ) -> None:
        self.control = InstanceControl(
            backend, codec=codec, conflict_policy=conflict_policy, clock=clock
        )
        self.backend = backend
        self.codec = codec
        self.executor = executor
        self.owner_id = owner_id or default_owner_id()
        self.lease_ttl = lease_ttl
        self.on_event = on_event
        self._clock = clock
        # A run's statements follow one another: on a backend that offers
        # hold_connection() (PostgreSQL), they share one connection instead of taking
        # one from the pool each. getattr, not a runtime Protocol check: that costs
        # microseconds per run, which an in-memory run notices.
        hold = getattr(backend, "hold_connection", None)
        self._hold: Callable[[], AbstractAsyncContextManager[None]] = (
            hold if hold is not None else nullcontext
        )

    async def open(self) -> None:
        """Open the backend once per process."""
        await self.control.open()

    async def run(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
    ) -> WorkflowStatus:
        """Create the instance and run it here until it finishes or parks."""
        require_workflow(workflow, "run()")
        await self.open()
        async with self._hold():
            return await self._create_and_run(workflow, instance_id, input_value, conflict_policy)

    async def _create_and_run(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        conflict_policy: str | ConflictPolicy | None,
    ) -> WorkflowStatus:
        new = self.control.new_instance(
            workflow,
            instance_id,
            input_value,
            self._clock(),
            owner=self.owner_id,
            lease_ttl=self.lease_ttl,
        )
        record, created = await self.backend.create(new, self.control.policy(conflict_policy))
        if not created:
            refuse_another_workflow(record, workflow)
            return status_from(record, self.codec)
        snapshot = start(self.codec.decode(record.input))
        return await self._run_owned(
            workflow, record, snapshot, record.claim_token, None, created_here=True
        )

    async def resume(
        self, workflow: Workflow, instance_id: str, *, allow_definition_change: bool = False
    ) -> WorkflowStatus:
        """Take the instance over (whoever held it) and continue from its last checkpoint."""
        require_workflow(workflow, "resume()")
        await self.open()
        async with self._hold():
            return await self._take_over(workflow, instance_id, allow_definition_change)

    async def _take_over(
        self, workflow: Workflow, instance_id: str, allow_definition_change: bool
    ) -> WorkflowStatus:
        record = await self.control.require(instance_id)
        check_definition(workflow, record, allow_definition_change)
        if record.status.is_terminal or (
            record.status is Status.PAUSED and record.control_request is None
        ):
            return status_from(record, self.codec)
        claim = await self.backend.claim(instance_id, self.owner_id, self.lease_ttl, self._clock())
        if record.owner is not None and record.owner != self.owner_id:
            count_takeover(record.workflow_id)
        if record.definition_hash != workflow.definition_hash:
            await self._rebind(claim, workflow)
        return await self.run_claimed(workflow, claim, DURABLE_RUN)

    async def release(self, instance_id: str, token: int) -> None:
        """Give up claim ``token`` on the instance, leaving its state as last written."""
        record = await self.backend.get_record(instance_id)
        if record is None or record.owner is None or record.claim_token != token:
            return  # already released, or someone else holds it now
        await self.backend.commit(instance_id, token, rewrite(record, self._clock(), release=True))

    async def run_claimed(
        self,
        workflow: Workflow,
        claim: Claim,
        park: ParkPolicy = DURABLE_RUN,
        *,
        stop: asyncio.Event | None = None,
    ) -> WorkflowStatus:
        """Run an instance this owner has just claimed, until it finishes or parks.

        ``park`` says when to stop and leave the instance for later (a delay, a signal
        wait, a long retry back-off); ``stop``, once set, lets the running steps finish
        and checkpoint, then releases the claim. Raises ``LeaseLostError`` if another
        owner took the lease over meanwhile (the instance is then theirs).
        """
        await self.open()
        record = claim.instance.record
        snapshot = snapshot_from(claim.instance, self.codec)
        first: Event | None = None
        if record.control_request is ControlRequest.CANCEL:
            first = CancelRequested()
        elif record.control_request is ControlRequest.PAUSE:
            first = PauseRequested()
        async with self._hold():
            return await self._run_owned(
                workflow, record, snapshot, claim.token, first, park=park, stop=stop
            )

    async def _rebind(self, claim: Claim, workflow: Workflow) -> None:
        """Record that the instance now runs under ``workflow``'s definition."""
        record = claim.instance.record
        now = self._clock()
        change = {"from": record.definition_hash, "to": workflow.definition_hash}
        await self.backend.commit(
            record.instance_id,
            claim.token,
            rewrite(
                record,
                now,
                events=[HistoryEvent("definition_changed", now, detail=change)],
                definition_hash=workflow.definition_hash,
            ),
        )

    async def _run_owned(
        self,
        workflow: Workflow,
        record: InstanceRecord,
        snapshot: Snapshot,
        token: int,
        first: Event | None,
        *,
        park: ParkPolicy = DURABLE_RUN,
        stop: asyncio.Event | None = None,
        created_here: bool = False,
    ) -> WorkflowStatus:
        """Run until the instance finishes or parks; ``record`` is it as claimed.

        With telemetry on, the run is one span: under the current span when the
        instance was ``created_here``, else under the trace context stored at submit.
        """
        observation = None
        if any_on():
            parent = None
            if not created_here and tracing_on():
                parent = await stored_trace_context(self.backend, record.instance_id)
            observation = observe_instance(
                workflow.workflow_id, record.instance_id, record.created_at, self.owner_id, parent
            )
        if observation is None:
            return await self._run_loop(workflow, record, snapshot, token, first, park, stop, None)
        with observation:
            status = await self._run_loop(
                workflow, record, snapshot, token, first, park, stop, observation
            )
            observation.finish(status.status)
        return status

    async def _run_loop(
        self,
        workflow: Workflow,
        record: InstanceRecord,
        snapshot: Snapshot,
        token: int,
        first: Event | None,
        park: ParkPolicy,
        stop: asyncio.Event | None,
        observation: InstanceObservation | None,
    ) -> WorkflowStatus:
        instance_id = record.instance_id
        while True:
            sink = ClaimedSink(
                self.backend, instance_id, token, self.on_event, observation=observation
            )
            runner = InstanceRunner(
                workflow,
                instance_id,
                snapshot,
                executor=self.executor,
                codec=self.codec,
                sink=sink,
                park=park,
                worker_id=self.owner_id,
                clock=self._clock,
                stop=stop,
            )
            await self._run_with_heartbeat(runner, first, instance_id, token, sink)
            if not await self._should_go_on(instance_id, runner):
                break
            # A signal arrived while the instance parked, or an unpause while its pause
            # settled: take it back and go on, unless a worker claimed it meanwhile
            # (the same signal woke it): taking that claim over would fence its run.
            claim = await claim_if_free(
                self.backend,
                instance_id,
                self.owner_id,
                {workflow.workflow_id: workflow.definition_hash},
                self.lease_ttl,
                self._clock(),
            )
            if claim is None:
                break
            snapshot, token, first = snapshot_from(claim.instance, self.codec), claim.token, None
            record = claim.instance.record
        final = sink.last_write
        if final is not None and final.status in (Status.COMPLETED, Status.FAILED):
            # Finished by its own last write, nothing anyone else set: no need to read
            # the record back (cancelled ones carry the canceller's reason, so they do).
            return status_from(committed_record(record, final), self.codec)
        return status_from(await self.control.require(instance_id), self.codec)

    async def _run_with_heartbeat(
        self,
        runner: InstanceRunner,
        first: Event | None,
        instance_id: str,
        token: int,
        sink: ClaimedSink,
    ) -> None:
        run = asyncio.ensure_future(runner.run(first))

        def lost() -> None:
            sink.lost = True
            run.cancel()

        heartbeat = LeaseHeartbeat(
            self.backend, instance_id, token, self.lease_ttl, self._clock, lost
        )
        heartbeat.start()
        try:
            await run
        except asyncio.CancelledError:
            if sink.lost:
                if sink.observation is not None:
                    sink.observation.lease_lost()
                raise LeaseLostError(
                    f"instance {instance_id!r}: lease lost to another owner; stopped"
                ) from None
            raise
        finally:
            heartbeat.stop()
            run.cancel()

    async def _should_go_on(self, instance_id: str, runner: InstanceRunner) -> bool:
        if runner.snapshot.status is Status.PAUSED:
            record = await self.backend.get_record(instance_id)
            return record is not None and record.status is Status.PENDING
        if runner.snapshot.status is not Status.AWAITING_SIGNAL:
            return False
        for name in runner.awaited_signals:
            if await self.backend.next_signal(instance_id, name) is not None:
                return True
        return False


def check_definition(workflow: Workflow, record: InstanceRecord, allow_change: bool) -> None:
    """``DefinitionMismatchError`` unless ``record`` was started by ``workflow`` as built now."""
    if record.workflow_id != workflow.workflow_id:
        raise DefinitionMismatchError(
            f"instance {record.instance_id!r} belongs to workflow {record.workflow_id!r}, "
            f"not {workflow.workflow_id!r}"
        )
    if record.definition_hash != workflow.definition_hash and not allow_change:
        raise DefinitionMismatchError(
            f"instance {record.instance_id!r} was started by another definition of workflow "
            f"{workflow.workflow_id!r} (hash {record.definition_hash[:12]}, this one "
            f"{workflow.definition_hash[:12]}); its structure, step ids, timeouts, retries "
            "or versions changed. Pass allow_definition_change=True to resume it anyway."
        )


def rewrite(state: InstanceRecord | StepWrite, now: float, **changes: Any) -> StepWrite:
    """A write that keeps the instance as ``state`` (its record, or the last write made
    of it) left it, plus ``changes`` (release, rebind...)."""
    return StepWrite(
        status=state.status,
        control=state.control,
        now=now,
        output=state.output,
        error=state.error,
        wake_at=state.wake_at,
        **changes,
    )


class ClaimedSink:
    """Writes steps under a claim token; knows whether the claim was released or lost."""

    def __init__(
        self,
        backend: Backend,
        instance_id: str,
        token: int,
        on_event: EventListener | None,
        *,
        observation: InstanceObservation | None = None,
    ) -> None:
        self._backend = backend
        self._instance_id = instance_id
        self._token = token
        self._on_event = on_event
        self.observation = observation
        self.lost = False
        self.last_write: StepWrite | None = None

    async def write(self, write: StepWrite) -> ControlRequest | None:
        try:
            request = await self._backend.commit(self._instance_id, self._token, write)
        except LeaseLostError:
            if self.observation is not None:
                self.observation.commit_fenced()
            raise
        self.last_write = write
        if self.observation is not None:
            self.observation.on_events(write.events)
        if self._on_event is not None:
            for event in write.events:
                self._on_event(self._instance_id, event)
        return request

    async def next_signal(self, name: str) -> BufferedSignal | None:
        return await self._backend.next_signal(self._instance_id, name)

    async def pending_control(self) -> ControlRequest | None:
        record = await self._backend.get_record(self._instance_id)
        return record.control_request if record is not None else None
