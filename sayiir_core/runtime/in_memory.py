"""Running an instance with nothing stored: ``run_workflow`` without an instance id."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from sayiir_core.backends.base import BufferedSignal, ControlRequest, StepWrite
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import WorkflowError
from sayiir_core.machine import Snapshot, start
from sayiir_core.runtime.caller_loop import caller_loop
from sayiir_core.runtime.executor import (
    Executor,
    LocalExecutor,
    RunsStepsInline,
    encode_or_raise,
    is_async_callable,
)
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.runtime.runner import IN_MEMORY_RUN, InstanceRunner
from sayiir_core.telemetry.instances import observe_instance
from sayiir_core.telemetry.otel import any_provider_set
from sayiir_core.workflow.workflow import Workflow


def in_memory_instance_id(workflow: Workflow) -> str:
    """A fresh id per in-memory run, so idempotency keys differ between runs."""
    return f"{workflow.workflow_id}-{uuid.uuid4().hex[:12]}"


def run_in_memory_blocking(
    workflow: Workflow, input_value: Any, executor: Executor, instance_id: str
) -> Snapshot:
    """``run_in_memory`` for a blocking caller (``run_workflow`` without an instance id).

    A workflow of sync steps runs on the calling thread's own loop, its steps inline
    while each is all the run has to do (see ``caller_loop``). Where that loop cannot
    serve, and for a workflow with async steps, the run goes to the loop thread: an async
    step may use objects bound to that loop (a client, a pool), as it always could.
    """
    if isinstance(executor, LocalExecutor) and not _has_async_steps(workflow):
        here = caller_loop()
        if here is not None:
            run = run_in_memory(workflow, input_value, executor, instance_id, inline=executor)
            return here.run(run)
    return run_sync(run_in_memory(workflow, input_value, executor, instance_id))


def _has_async_steps(workflow: Workflow) -> bool:
    return any(is_async_callable(task.fn) for task in workflow.tasks.values())


async def run_in_memory(
    workflow: Workflow,
    input_value: Any,
    executor: Executor,
    instance_id: str,
    codec: Codec = DEFAULT_CODEC,
    *,
    inline: RunsStepsInline | None = None,
) -> Snapshot:
    """Run to the end without any persistence; delays and back-offs are slept here.

    With telemetry on, the run is an instance span under the current span, and its
    end is recorded in the workflow duration histogram. ``inline``: see
    ``InstanceRunner``; only on a loop private to this run.
    """
    created_at = time.time()
    snapshot = start(codec.decode(encode_or_raise(codec, input_value, "workflow input")))
    runner = InstanceRunner(
        workflow,
        instance_id,
        snapshot,
        executor=executor,
        codec=codec,
        sink=_NoStorage(workflow.workflow_id),
        park=IN_MEMORY_RUN,
        inline=inline,
    )
    # Telemetry off (nothing imported OpenTelemetry, or no provider set): no observation.
    observation = (
        observe_instance(workflow.workflow_id, instance_id, created_at, None, None)
        if "opentelemetry" in sys.modules and any_provider_set()
        else None
    )
    if observation is None:
        return await runner.run()
    with observation:
        finished = await runner.run()
        observation.ended_unstored(finished.status.value, time.time())
    return finished


class _NoStorage:
    # Every write would be dropped: the runner skips building them (see discards_writes).
    discards_writes = True

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
