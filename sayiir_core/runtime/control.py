"""``InstanceControl``: submitting instances and acting on them, without running a step.

The clients (``AsyncWorkflowClient``, ``WorkflowClient``) and the blocking control
functions (``cancel_workflow``, ``send_signal``...) are faces of this one class, so each
operation is written once. It needs a backend and a codec, never an executor:
running steps is ``DurableRunner``'s part (``runtime/durable_runner.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sayiir_core.backends.base import (
    Backend,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
    NewInstance,
)
from sayiir_core.backends.rules import missing
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import DefinitionMismatchError, UnknownSignalError, WaitTimeoutError
from sayiir_core.ids import validate_instance_id
from sayiir_core.machine import Tick, advance, start
from sayiir_core.runtime.checks import require_backend
from sayiir_core.runtime.convert import status_from
from sayiir_core.runtime.executor import encode_or_raise
from sayiir_core.runtime.runner import DEFAULT_PRIORITY, next_priority
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.telemetry.propagation import current_trace_context
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.workflow import Workflow


def conflict_policy_from(value: str | ConflictPolicy | None) -> ConflictPolicy:
    """``ConflictPolicy`` from its value (``None``: ``FAIL``); ``ValueError`` names the choices."""
    if value is None:
        return ConflictPolicy.FAIL
    try:
        return ConflictPolicy(value)
    except ValueError:
        choices = ", ".join(repr(policy.value) for policy in ConflictPolicy)
        raise ValueError(f"unknown conflict_policy {value!r}; expected one of {choices}") from None


class InstanceControl:
    """Submits, inspects and controls instances over one backend; never runs a step.

    The backend is opened on first use, and again in a process forked after that (the
    backend then drops what it inherited and connects afresh). It is never closed here:
    whoever created it closes it.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        codec: Codec = DEFAULT_CODEC,
        conflict_policy: str | ConflictPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = require_backend(backend, "the backend argument")
        self.codec = codec
        self.conflict_policy = conflict_policy_from(conflict_policy)
        self.clock = clock
        self._opened_in: int | None = None  # the pid of the process that opened it
        # Workflows by id whose signal names ``send_signal`` checks (see ``know``).
        self.known_workflows: dict[str, Workflow] = {}

    async def open(self) -> None:
        """Open the backend once per process (``open`` is idempotent; a call costs a check)."""
        pid = os.getpid()
        if self._opened_in != pid:
            await self.backend.open()
            self._opened_in = pid

    def policy(self, override: str | ConflictPolicy | None) -> ConflictPolicy:
        """``override`` if given, else this object's conflict policy."""
        return self.conflict_policy if override is None else conflict_policy_from(override)

    async def submit(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
    ) -> WorkflowStatus:
        """Store a new instance for a worker to run; does not run any step.

        The workflow becomes known (``know``): signals to its instances under a name it
        never waits for are refused from then on.
        """
        require_workflow(workflow, "submit()")
        self.known_workflows[workflow.workflow_id] = workflow
        await self.open()
        new = self.new_instance(workflow, instance_id, input_value, self.clock())
        record, created = await self.backend.create(new, self.policy(conflict_policy))
        if not created:
            refuse_another_workflow(record, workflow)
        return status_from(record, self.codec)

    async def status(self, instance_id: str) -> WorkflowStatus:
        await self.open()
        return status_from(await self.require(instance_id), self.codec)

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
        validate_instance_id(instance_id)
        await self.open()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.backend.watch_finish(instance_id) as finished:
            every = poll_interval if poll_interval is not None else finished.poll_interval
            while True:
                record = await self.require(instance_id)
                if record.status.is_terminal:
                    return status_from(record, self.codec)
                left = every if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(_not_finished(record, timeout))
                await finished.wait(min(every, left))

    async def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        validate_instance_id(instance_id)
        await self.open()
        record = await self.backend.request_control(
            instance_id, ControlRequest.CANCEL, reason, cancelled_by, self.clock()
        )
        return status_from(record, self.codec)

    async def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        validate_instance_id(instance_id)
        await self.open()
        record = await self.backend.request_control(
            instance_id, ControlRequest.PAUSE, reason, paused_by, self.clock()
        )
        return status_from(record, self.codec)

    async def unpause(self, instance_id: str) -> WorkflowStatus:
        validate_instance_id(instance_id)
        await self.open()
        return status_from(await self.backend.unpause(instance_id, self.clock()), self.codec)

    def know(self, *workflows: Workflow) -> None:
        """Remember ``workflows``, so ``send_signal`` can refuse names they never wait for."""
        for workflow in workflows:
            require_workflow(workflow, "know()")
            self.known_workflows[workflow.workflow_id] = workflow

    async def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        """Buffer a signal for the instance; a known workflow's unawaited name is refused.

        When this object knows the instance's workflow (same id and definition hash,
        see ``know``), a name that workflow never waits for raises
        ``UnknownSignalError`` before anything is sent. Otherwise the backend buffers
        it, up to ``MAX_BUFFERED_SIGNALS`` per instance (``SignalBufferFullError``).
        """
        validate_instance_id(instance_id)
        await self.open()
        encoded = encode_or_raise(self.codec, payload, f"payload of signal {signal_name!r}")
        if self.known_workflows:  # no read when nothing is known: the backend decides
            record = await self.require(instance_id)
            workflow = self.known_workflows.get(record.workflow_id)
            if workflow is not None and workflow.definition_hash == record.definition_hash:
                refuse_unawaited_signal(record, workflow, signal_name)
        await self.backend.send_signal(instance_id, signal_name, encoded, self.clock())

    async def get_task_result(self, instance_id: str, task_id: str) -> Any:
        """The checkpointed output of a step, or ``None`` if it has not completed."""
        validate_instance_id(instance_id)
        await self.open()
        payload = await self.backend.get_checkpoint(instance_id, task_id)
        if payload is None:
            await self.require(instance_id)
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
        """One page of instances, newest first, and the cursor of the next (or ``None``)."""
        await self.open()
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        wanted = Status(status) if status is not None else None
        page: InstancePage = await self.backend.list_instances(
            status=wanted, workflow_id=workflow_id, limit=limit, cursor=cursor
        )
        return [status_from(record, self.codec) for record in page.items], page.next_cursor

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's append-only events, oldest first."""
        validate_instance_id(instance_id)
        await self.open()
        return await self.backend.history(instance_id)

    async def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        validate_instance_id(instance_id)
        await self.open()
        record = await self.backend.reset_from(instance_id, task_id, self.clock())
        return status_from(record, self.codec)

    async def require(self, instance_id: str) -> InstanceRecord:
        """The stored record; ``InstanceNotFoundError`` if there is none."""
        validate_instance_id(instance_id)
        record = await self.backend.get_record(instance_id)
        if record is None:
            raise missing(instance_id)
        return record

    def new_instance(
        self,
        workflow: Workflow,
        instance_id: str,
        input_value: Any,
        now: float,
        *,
        owner: str | None = None,
        lease_ttl: float = 0.0,
    ) -> NewInstance:
        """What ``create`` stores: ``in_progress`` for a worker, or claimed by ``owner``."""
        validate_instance_id(instance_id)
        encoded = encode_or_raise(self.codec, input_value, f"input of instance {instance_id!r}")
        _, first_steps = advance(workflow, start(self.codec.decode(encoded)), Tick(now))
        return NewInstance(
            instance_id=instance_id,
            workflow_id=workflow.workflow_id,
            definition_hash=workflow.definition_hash,
            input=encoded,
            status=Status.RUNNING if owner is not None else Status.PENDING,
            now=now,
            owner=owner,
            lease_until=now + lease_ttl if owner is not None else None,
            priority=next_priority(first_steps) or DEFAULT_PRIORITY,
            trace_context=current_trace_context(),
        )


def refuse_another_workflow(existing: InstanceRecord, workflow: Workflow) -> None:
    """``conflict_policy="use_existing"`` reuses an instance of *this* workflow only.

    An instance of another workflow on that id is not "the existing run" of this
    submit: returning its status would pass it off as this workflow's. The refusal is a
    ``DefinitionMismatchError`` (the instance exists, but was started by another
    workflow), the error ``resume_workflow`` raises for the same mismatch.
    """
    if existing.workflow_id != workflow.workflow_id:
        raise DefinitionMismatchError(
            f"instance {existing.instance_id!r} already exists and belongs to workflow "
            f"{existing.workflow_id!r}, not {workflow.workflow_id!r}; "
            "conflict_policy='use_existing' only reuses an instance of the same workflow: "
            "choose another instance id"
        )


def refuse_unawaited_signal(record: InstanceRecord, workflow: Workflow, signal_name: str) -> None:
    """Refuse a signal ``workflow`` (the instance's definition) can never wait for.

    Nothing would ever consume it: it would only sit in the instance's buffer.
    """
    awaited = workflow.signal_names
    if signal_name in awaited:
        return
    waits_for = (
        "it waits for " + ", ".join(repr(name) for name in awaited)
        if awaited
        else "it waits for no signal at all"
    )
    raise UnknownSignalError(
        f"signal {signal_name!r} not sent: workflow {workflow.workflow_id!r} of instance "
        f"{record.instance_id!r} never waits for it; {waits_for}",
        instance_id=record.instance_id,
        workflow_id=workflow.workflow_id,
        signal_name=signal_name,
        awaited=awaited,
    )


def _not_finished(record: InstanceRecord, timeout: float | None) -> str:
    """Why ``wait`` gave up; "goes on running" only for an instance a worker runs."""
    head = f"instance {record.instance_id!r} did not finish within {timeout}s"
    if record.status is Status.PENDING:
        return (
            f"{head}: no worker has picked it up yet (status {record.status.reported}); "
            f"is a worker serving workflow {record.workflow_id!r} on this database?"
        )
    return f"{head} (status {record.status.reported}); it goes on running"
