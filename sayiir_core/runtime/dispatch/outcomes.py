"""Between the step queue's stored steps and the executor's outcomes, both ways."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sayiir_core.backends.base import InstanceRecord
from sayiir_core.backends.step_queue import ClaimedStep
from sayiir_core.codec import Codec
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.runtime.executor import TaskFailure, TaskRequest
from sayiir_core.workflow.workflow import Workflow


def dispatched_steps(record: InstanceRecord) -> dict[str, int]:
    """The steps an instance waits for from other processes: ``{step_key: attempt}``."""
    return dispatched_in(record.control)


def dispatched_in(control: Mapping[str, object]) -> dict[str, int]:
    """``control["dispatched"]`` as the runner writes it (empty if absent)."""
    value = control.get("dispatched")
    if not isinstance(value, Mapping):
        return {}
    return {str(key): int(attempt) for key, attempt in value.items()}


def step_request(
    claimed: ClaimedStep, workflow: Workflow, codec: Codec
) -> TaskRequest | TaskFailure:
    """The request to run a claimed step, or the failure that stops it before it runs."""
    ticket, ref = claimed.ticket, claimed.ticket.ref
    now = time.time()
    task = workflow.tasks.get(task_id_of_key(ref.step_key))
    if task is None:  # cannot happen while definition hashes match; say so if it does
        message = f"workflow {workflow.workflow_id!r} has no step {ref.step_key!r}"
        return failure(ref.step_key, "WorkflowError", message, now, kind="workflow")
    try:
        value = codec.decode(ticket.input)
    except ValueError as error:
        message = f"input of step {ref.step_key!r} cannot be decoded as {codec.name}: {error}"
        return failure(ref.step_key, "SerializationError", message, now)
    return TaskRequest(
        workflow_id=ticket.workflow_id,
        instance_id=ref.instance_id,
        key=ref.step_key,
        task=task,
        input=value,
        attempt=ref.attempt,
        workflow_metadata=workflow.metadata,
    )


def failure(
    key: str, error_type: str, message: str, now: float, kind: str = "serialization"
) -> TaskFailure:
    """A non-retryable failure of ``key`` that happened outside the task's code."""
    return TaskFailure(ErrorInfo(error_type, message, key, kind), False, "", now, now)
