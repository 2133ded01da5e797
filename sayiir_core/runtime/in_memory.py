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
from sayiir_core.runtime.executor import Executor, encode_or_raise
from sayiir_core.runtime.runner import IN_MEMORY_RUN, InstanceRunner
from sayiir_core.telemetry.instances import observe_instance
from sayiir_core.telemetry.otel import any_provider_set
from sayiir_core.workflow.workflow import Workflow


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
    """Run to the end without any persistence; delays and back-offs are slept here.

    With telemetry on, the run is an instance span under the current span, and its
    end is recorded in the workflow duration histogram.
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
