"""Running a step claimed from the shared step queue (see ``step_queue.py``).

The worker that runs a shared step never touches the instance: it runs the function
with the worker's executor, keeps the step's lease alive, and stores the outcome for
the instance's orchestrator to checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from sayiir_core.backends.step_queue import ClaimedStep, StepQueue, StepResult
from sayiir_core.codec import Codec
from sayiir_core.errors import PayloadTooLargeError
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.runtime.executor import Executor, TaskOutcome, TaskRequest
from sayiir_core.runtime.step_outcomes import step_result
from sayiir_core.telemetry.logs import InstanceLogger
from sayiir_core.telemetry.propagation import attached, stored_parent
from sayiir_core.telemetry.steps import current_worker_id
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.worker")

RENEW_AT_MOST_EVERY = 2.0


async def run_claimed_step(
    claimed: ClaimedStep,
    *,
    queue: StepQueue,
    executor: Executor,
    registry: Mapping[str, Workflow],
    codec: Codec,
    worker_id: str,
    ttl: float,
) -> None:
    """Run one claimed step to its stored outcome, unless its lease is lost meanwhile.

    ``claimed`` comes from the queue's ``claim_steps`` (or from claiming one named
    step); ``registry`` maps workflow ids to the workflows whose steps may be run;
    ``ttl`` is the step's lease, renewed while it runs. The outcome is stored with
    ``finish_step`` under the claim's token, so a duplicate delivery or a late finish
    after the lease was taken over is discarded. The instance's own runner checkpoints
    it; this never touches the instance. Task errors are outcomes, not exceptions.
    """
    ref = claimed.ticket.ref
    log = _step_logger(claimed)
    started = time.time()
    request = _request(claimed, registry, codec)
    if isinstance(request, ErrorInfo):
        result = StepResult(worker_id, started, time.time(), error=request)
    else:
        run = asyncio.ensure_future(_execute(executor, request, queue, worker_id))
        heartbeat = asyncio.create_task(_keep_lease(claimed, queue, ttl, run))
        try:
            outcome = await run
        except asyncio.CancelledError:
            if heartbeat.done() and not heartbeat.cancelled() and heartbeat.result() is False:
                log.info("[%s] shared step %s withdrawn or taken over", ref.instance_id, ref)
                return
            raise
        finally:
            heartbeat.cancel()
            run.cancel()
        result = step_result(outcome, worker_id)
    try:
        stored = await queue.finish_step(ref, claimed.token, result)
    except PayloadTooLargeError as error:
        # Storing it again would fail again: record the failure instead, as a step run
        # by the instance's own runner does, so the instance fails rather than waits.
        info = ErrorInfo("PayloadTooLargeError", str(error), ref.step_key, "serialization")
        too_large = StepResult(worker_id, result.started_at, result.finished_at, error=info)
        stored = await queue.finish_step(ref, claimed.token, too_large)
    if not stored:
        log.info(
            "[%s] step %r attempt %d: taken over meanwhile; result discarded",
            ref.instance_id,
            ref.step_key,
            ref.attempt,
        )


def _step_logger(claimed: ClaimedStep) -> InstanceLogger:
    ref = claimed.ticket.ref
    return InstanceLogger(
        logger,
        ref.instance_id,
        workflow_id=claimed.ticket.workflow_id,
        task_id=task_id_of_key(ref.step_key),
    )


async def _execute(
    executor: Executor, request: TaskRequest, queue: StepQueue, worker_id: str
) -> TaskOutcome:
    # Continue the submitter's trace: the stored context is read (from the queue's
    # history, when it is the backend) only while tracing is on.
    parent = await stored_parent(queue, request.instance_id)
    if parent is None:
        return await executor.execute(request)
    current_worker_id.set(worker_id)  # this asyncio task's own context
    with attached(parent):
        return await executor.execute(request)


def _request(
    claimed: ClaimedStep, registry: Mapping[str, Workflow], codec: Codec
) -> TaskRequest | ErrorInfo:
    ticket, ref = claimed.ticket, claimed.ticket.ref
    workflow = registry[ticket.workflow_id]
    task = workflow.tasks.get(task_id_of_key(ref.step_key))
    if task is None:  # cannot happen while definition hashes match; say so if it does
        message = f"workflow {workflow.workflow_id!r} has no step {ref.step_key!r}"
        return ErrorInfo("WorkflowError", message, ref.step_key, "workflow")
    try:
        value = codec.decode(ticket.input)
    except ValueError as error:  # written by another codec, say: every worker would fail
        message = f"input of step {ref.step_key!r} cannot be decoded as {codec.name}: {error}"
        return ErrorInfo("SerializationError", message, ref.step_key, "serialization")
    return TaskRequest(
        workflow_id=ticket.workflow_id,
        instance_id=ref.instance_id,
        key=ref.step_key,
        task=task,
        input=value,
        attempt=ref.attempt,
        workflow_metadata=workflow.metadata,
    )


async def _keep_lease(
    claimed: ClaimedStep, queue: StepQueue, ttl: float, run: asyncio.Future[TaskOutcome]
) -> bool:
    """Renew the lease; once it is lost stop the step (its outcome is not ours any more).

    Renewing is also how a cancel reaches the step: the instance's final commit drops
    its queued steps, so the renewal at most ``RENEW_AT_MOST_EVERY`` seconds later fails.
    """
    while True:
        await asyncio.sleep(min(ttl / 3, RENEW_AT_MOST_EVERY))
        renewed: bool | None = None
        with contextlib.suppress(Exception):  # unreachable storage: the next beat retries
            renewed = await queue.renew_step(claimed.ticket.ref, claimed.token, ttl, time.time())
        if renewed is False:
            run.cancel()
            return False
