"""A workflow span around each step a dispatcher runs from a message (a Celery task).

In a ``Worker`` the steps of a run hang under one ``workflow <id>`` span. A bridged step
runs on its own: one message, one step, then an advance of its instance. So each such
message gets a ``workflow <id>`` span of its own, the child of the submitter's stored
context, with the step span under it: the same shape as in a worker (``submit`` >
``workflow`` > ``step``), one workflow span per step message instead of one per run.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Protocol, TypeVar

from sayiir_core.telemetry import otel
from sayiir_core.telemetry.attributes import (
    ATTR_ERROR_TYPE,
    ATTR_INSTANCE,
    ATTR_OUTCOME,
    ATTR_STEP_KEY,
    ATTR_WORKER,
    ATTR_WORKFLOW,
)
from sayiir_core.telemetry.propagation import _continuing, stored_parent
from sayiir_core.telemetry.steps import current_worker_id, otel_modules

if TYPE_CHECKING:
    from sayiir_core.backends.step_queue import ClaimedStepAndInstance, StepRef
    from sayiir_core.runtime.dispatch.chain import ChainLink

Outcome = TypeVar("Outcome", bound=Enum, covariant=True)
R = TypeVar("R", bound=Enum)


class StepDispatcher(Protocol[Outcome]):
    """What of ``runtime.dispatch.Dispatcher`` this needs."""

    @property
    def backend(self) -> object: ...

    @property
    def owner_id(self) -> str: ...

    async def open(self) -> None: ...

    async def run_step(
        self,
        ref: StepRef,
        workflow_id: str,
        definition_hash: str,
        *,
        claimed: ClaimedStepAndInstance | None = None,
        chain: ChainLink | None = None,
    ) -> Outcome: ...


async def run_step_traced(
    dispatcher: StepDispatcher[R],
    ref: StepRef,
    workflow_id: str,
    definition_hash: str,
    *,
    claimed: ClaimedStepAndInstance | None = None,
    chain: ChainLink | None = None,
) -> R:
    """``dispatcher.run_step(...)`` under a ``workflow <id>`` span when tracing is on."""
    tracer = otel.tracer()
    if tracer is None:
        return await dispatcher.run_step(
            ref, workflow_id, definition_hash, claimed=claimed, chain=chain
        )
    await dispatcher.open()
    parent = await stored_parent(dispatcher.backend, ref.instance_id)
    span = tracer.start_span(
        f"workflow {workflow_id}",
        context=parent,
        attributes={
            ATTR_WORKFLOW: workflow_id,
            ATTR_INSTANCE: ref.instance_id,
            ATTR_STEP_KEY: ref.step_key,
            ATTR_WORKER: dispatcher.owner_id,
        },
    )
    context_api, trace_api = otel_modules()
    token = context_api.attach(trace_api.set_span_in_context(span))
    # The step and the advance run in tasks that copy this context: they see the span,
    # the worker id, and that the stored trace is already continued here.
    continuing = _continuing.set(ref.instance_id)
    worker = current_worker_id.set(dispatcher.owner_id)
    try:
        outcome = await dispatcher.run_step(
            ref, workflow_id, definition_hash, claimed=claimed, chain=chain
        )
        span.set_attribute(ATTR_OUTCOME, str(outcome.value))
        return outcome
    except BaseException as error:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute(ATTR_OUTCOME, "error")
        span.set_attribute(ATTR_ERROR_TYPE, type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
        raise
    finally:
        current_worker_id.reset(worker)
        _continuing.reset(continuing)
        context_api.detach(token)
        span.end()
