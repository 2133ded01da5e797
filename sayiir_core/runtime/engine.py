"""``Engine``: the async operations behind every public face.

The sync functions, ``WorkflowClient``, ``AsyncWorkflowClient`` and ``Worker`` all call
into one engine, so each behaviour is written once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from sayiir_core.backends.base import (
    Backend,
    BufferedSignal,
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
    NewInstance,
    StepWrite,
)
from sayiir_core.backends.rules import committed_record, missing
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import (
    DefinitionMismatchError,
    LeaseLostError,
    WaitTimeoutError,
    WorkflowError,
)
from sayiir_core.machine import (
    CancelRequested,
    Event,
    PauseRequested,
    Snapshot,
    Tick,
    advance,
    start,
)
from sayiir_core.runtime.convert import snapshot_from, status_from
from sayiir_core.runtime.executor import Executor, LocalExecutor, encode_or_raise
from sayiir_core.runtime.runner import (
    DEFAULT_PRIORITY,
    DURABLE_RUN,
    IN_MEMORY_RUN,
    InstanceRunner,
    ParkPolicy,
    next_priority,
)
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.workflow import Workflow

DEFAULT_LEASE_TTL = 60.0

logger = logging.getLogger("sayiir.engine")

EventListener = Callable[[str, HistoryEvent], None]
"""Called with ``(instance_id, event)`` after each history event is durably written."""


def default_owner_id() -> str:
    """A process-unique claim owner: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def conflict_policy_from(value: str | ConflictPolicy | None) -> ConflictPolicy:
    if value is None:
        return ConflictPolicy.FAIL
    try:
        return ConflictPolicy(value)
    except ValueError:
        choices = ", ".join(repr(policy.value) for policy in ConflictPolicy)
        raise ValueError(f"unknown conflict_policy {value!r}; expected one of {choices}") from None


class Engine:
    """Runs, submits and controls instances over one backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        codec: Codec = DEFAULT_CODEC,
        executor: Executor | None = None,
        conflict_policy: str | ConflictPolicy | None = None,
        owner_id: str | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Callable[[], float] = time.time,
        on_event: EventListener | None = None,
    ) -> None:
        self.backend = backend
        self.on_event = on_event
        self.codec = codec
        self.executor: Executor = executor or LocalExecutor(codec=codec)
        self.conflict_policy = conflict_policy_from(conflict_policy)
        self.owner_id = owner_id or default_owner_id()
        self.lease_ttl = lease_ttl
        self._clock = clock
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.backend.open()
            self._opened = True

    # -- running in this process -----------------------------------------------------

    async def run(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
    ) -> WorkflowStatus:
        """Create the instance and run it here until it finishes or parks."""
        await self.open()
        policy = (
            conflict_policy_from(conflict_policy)
            if conflict_policy is not None
            else self.conflict_policy
        )
        now = self._clock()
        record, created = await self.backend.create(
            self._new_instance(workflow, instance_id, input_value, now, owned=True), policy
        )
        if not created:
            return status_from(record, self.codec)
        snapshot = start(self.codec.decode(record.input))
        return await self._run_owned(workflow, record, snapshot, record.claim_token, None)

    async def resume(
        self, workflow: Workflow, instance_id: str, *, allow_definition_change: bool = False
    ) -> WorkflowStatus:
        """Take the instance over (whoever held it) and continue from its last checkpoint."""
        await self.open()
        record = await self._require(instance_id)
        check_definition(workflow, record, allow_definition_change)
        if record.status.is_terminal or (
            record.status is Status.PAUSED and record.control_request is None
        ):
            return status_from(record, self.codec)
        claim = await self.backend.claim(instance_id, self.owner_id, self.lease_ttl, self._clock())
        if record.definition_hash != workflow.definition_hash:
            await self._rebind(claim, workflow)
        return await self.run_claimed(workflow, claim, DURABLE_RUN)

    async def release(self, instance_id: str, token: int) -> None:
        """Give up claim ``token`` on the instance, leaving its state as last written."""
        record = await self.backend.get_record(instance_id)
        if record is None or record.owner is None or record.claim_token != token:
            return  # already released, or someone else holds it now
        await self.backend.commit(instance_id, token, _rewrite(record, self._clock(), release=True))

    async def _rebind(self, claim: Claim, workflow: Workflow) -> None:
        """Record that the instance now runs under ``workflow``'s definition."""
        record = claim.instance.record
        now = self._clock()
        change = {"from": record.definition_hash, "to": workflow.definition_hash}
        await self.backend.commit(
            record.instance_id,
            claim.token,
            _rewrite(
                record,
                now,
                events=[HistoryEvent("definition_changed", now, detail=change)],
                definition_hash=workflow.definition_hash,
            ),
        )

    async def run_claimed(
        self,
        workflow: Workflow,
        claim: Claim,
        park: ParkPolicy,
        *,
        stop: asyncio.Event | None = None,
    ) -> WorkflowStatus:
        """Run an instance this owner has just claimed."""
        record = claim.instance.record
        snapshot = snapshot_from(claim.instance, self.codec)
        first: Event | None = None
        if record.control_request is ControlRequest.CANCEL:
            first = CancelRequested()
        elif record.control_request is ControlRequest.PAUSE:
            first = PauseRequested()
        return await self._run_owned(
            workflow, record, snapshot, claim.token, first, park=park, stop=stop
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
    ) -> WorkflowStatus:
        """Run until the instance finishes or parks; ``record`` is it as claimed."""
        instance_id = record.instance_id
        while True:
            sink = _ClaimedSink(self.backend, instance_id, token, self.on_event)
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
            # settled: take it back and go on.
            claim = await self.backend.claim(
                instance_id, self.owner_id, self.lease_ttl, self._clock()
            )
            snapshot, token, first = snapshot_from(claim.instance, self.codec), claim.token, None
            record = claim.instance.record
        final = sink.last_write
        if final is not None and final.status in (Status.COMPLETED, Status.FAILED):
            # Finished by its own last write, nothing anyone else set: no need to read
            # the record back (cancelled ones carry the canceller's reason, so they do).
            return status_from(committed_record(record, final), self.codec)
        return status_from(await self._require(instance_id), self.codec)

    async def _run_with_heartbeat(
        self,
        runner: InstanceRunner,
        first: Event | None,
        instance_id: str,
        token: int,
        sink: _ClaimedSink,
    ) -> None:
        run = asyncio.ensure_future(runner.run(first))
        heartbeat = asyncio.create_task(self._heartbeat(instance_id, token, run, sink))
        try:
            await run
        except asyncio.CancelledError:
            if sink.lost:
                raise LeaseLostError(
                    f"instance {instance_id!r}: lease lost to another owner; stopped"
                ) from None
            raise
        finally:
            heartbeat.cancel()
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

    async def _heartbeat(
        self, instance_id: str, token: int, run: asyncio.Future[Snapshot], sink: _ClaimedSink
    ) -> None:
        interval = self.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self.backend.renew(
                    instance_id, token, self.lease_ttl, self._clock()
                )
            except Exception:
                # The database is unreachable for now: try again at the next beat; the
                # lease still has two beats to run before anyone may take it over.
                logger.warning("instance %r: lease renewal failed; retrying", instance_id)
                continue
            if not renewed:
                sink.lost = True
                run.cancel()
                return

    # -- client operations -----------------------------------------------------------

    async def submit(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
    ) -> WorkflowStatus:
        """Store a new instance for a worker to run; does not run any step."""
        await self.open()
        policy = (
            conflict_policy_from(conflict_policy)
            if conflict_policy is not None
            else self.conflict_policy
        )
        new = self._new_instance(workflow, instance_id, input_value, self._clock(), owned=False)
        record, _ = await self.backend.create(new, policy)
        return status_from(record, self.codec)

    async def status(self, instance_id: str) -> WorkflowStatus:
        await self.open()
        return status_from(await self._require(instance_id), self.codec)

    async def wait(
        self,
        instance_id: str,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the clients' argument, a deadline for reads
        poll_interval: float | None,
    ) -> WorkflowStatus:
        """The instance's status once it has finished (completed, failed or cancelled)."""
        # Written as "not ok" so that NaN is refused too.
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        if poll_interval is not None and not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds or None, got {poll_interval!r}")
        await self.open()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.backend.watch_finish(instance_id) as finished:
            every = poll_interval if poll_interval is not None else finished.poll_interval
            while True:
                record = await self._require(instance_id)
                if record.status.is_terminal:
                    return status_from(record, self.codec)
                left = every if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"instance {instance_id!r} did not finish within {timeout}s "
                        f"(status {record.status}); it goes on running"
                    )
                await finished.wait(min(every, left))

    async def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        await self.open()
        record = await self.backend.request_control(
            instance_id, ControlRequest.CANCEL, reason, cancelled_by, self._clock()
        )
        return status_from(record, self.codec)

    async def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        await self.open()
        record = await self.backend.request_control(
            instance_id, ControlRequest.PAUSE, reason, paused_by, self._clock()
        )
        return status_from(record, self.codec)

    async def unpause(self, instance_id: str) -> WorkflowStatus:
        await self.open()
        return status_from(await self.backend.unpause(instance_id, self._clock()), self.codec)

    async def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        await self.open()
        encoded = encode_or_raise(self.codec, payload, f"payload of signal {signal_name!r}")
        await self.backend.send_signal(instance_id, signal_name, encoded, self._clock())

    async def get_task_result(self, instance_id: str, task_id: str) -> Any:
        """The checkpointed output of a step, or ``None`` if it has not completed."""
        await self.open()
        payload = await self.backend.get_checkpoint(instance_id, task_id)
        if payload is None:
            await self._require(instance_id)
            return None
        return self.codec.decode(payload)

    async def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowStatus], str | None]:
        await self.open()
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        wanted = Status(status) if status is not None else None
        page: InstancePage = await self.backend.list_instances(
            status=wanted, workflow_id=workflow_id, limit=limit, cursor=cursor
        )
        return [status_from(record, self.codec) for record in page.items], page.next_cursor

    async def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        await self.open()
        record = await self.backend.reset_from(instance_id, task_id, self._clock())
        return status_from(record, self.codec)

    # -- helpers ---------------------------------------------------------------------

    async def _require(self, instance_id: str) -> InstanceRecord:
        record = await self.backend.get_record(instance_id)
        if record is None:
            raise missing(instance_id)
        return record

    def _new_instance(
        self, workflow: Workflow, instance_id: str, input_value: Any, now: float, *, owned: bool
    ) -> NewInstance:
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError(f"instance_id must be a non-empty string, got {instance_id!r}")
        encoded = encode_or_raise(self.codec, input_value, f"input of instance {instance_id!r}")
        _, first_steps = advance(workflow, start(self.codec.decode(encoded)), Tick(now))
        return NewInstance(
            instance_id=instance_id,
            workflow_id=workflow.workflow_id,
            definition_hash=workflow.definition_hash,
            input=encoded,
            status=Status.RUNNING if owned else Status.PENDING,
            now=now,
            owner=self.owner_id if owned else None,
            lease_until=now + self.lease_ttl if owned else None,
            priority=next_priority(first_steps) or DEFAULT_PRIORITY,
        )


def in_memory_instance_id(workflow: Workflow) -> str:
    """A fresh id per in-memory run, so idempotency keys differ between runs."""
    return f"{workflow.workflow_id}-{uuid.uuid4().hex[:12]}"


async def run_in_memory(
    workflow: Workflow,
    input_value: Any,
    executor: Executor,
    instance_id: str,
    codec: Codec = DEFAULT_CODEC,
) -> Snapshot:
    """Run without any persistence (``run_workflow`` without an instance id)."""
    snapshot = start(codec.decode(encode_or_raise(codec, input_value, "workflow input")))
    runner = InstanceRunner(
        workflow,
        instance_id,
        snapshot,
        executor=executor,
        codec=codec,
        sink=_NoStorage(workflow.workflow_id),
        park=IN_MEMORY_RUN,
    )
    return await runner.run()


def _rewrite(record: InstanceRecord, now: float, **changes: Any) -> StepWrite:
    """A write that keeps the instance as it is, plus ``changes`` (release, rebind...)."""
    return StepWrite(
        status=record.status,
        control=record.control,
        now=now,
        output=record.output,
        error=record.error,
        wake_at=record.wake_at,
        **changes,
    )


def check_definition(workflow: Workflow, record: InstanceRecord, allow_change: bool) -> None:
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


class _ClaimedSink:
    """Writes steps under a claim token; knows whether the claim was released or lost."""

    def __init__(
        self, backend: Backend, instance_id: str, token: int, on_event: EventListener | None
    ) -> None:
        self._backend = backend
        self._instance_id = instance_id
        self._token = token
        self._on_event = on_event
        self.lost = False
        self.last_write: StepWrite | None = None

    async def write(self, write: StepWrite) -> ControlRequest | None:
        request = await self._backend.commit(self._instance_id, self._token, write)
        self.last_write = write
        if self._on_event is not None:
            for event in write.events:
                self._on_event(self._instance_id, event)
        return request

    async def next_signal(self, name: str) -> BufferedSignal | None:
        return await self._backend.next_signal(self._instance_id, name)

    async def pending_control(self) -> ControlRequest | None:
        record = await self._backend.get_record(self._instance_id)
        return record.control_request if record is not None else None


class _NoStorage:
    def __init__(self, workflow_id: str) -> None:
        self._workflow_id = workflow_id

    async def write(self, write: StepWrite) -> ControlRequest | None:
        return None

    async def next_signal(self, name: str) -> BufferedSignal | None:
        raise WorkflowError(
            f"workflow {self._workflow_id!r} waits for signal {name!r}, which needs a durable "
            "run: use run_durable_workflow(...) or run_workflow(..., instance_id=...)"
        )

    async def pending_control(self) -> ControlRequest | None:
        return None
