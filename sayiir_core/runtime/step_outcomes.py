"""A step's executor outcome <-> the ``StepResult`` the step queue stores, both ways.

Written once for every runner of shared steps: the worker's step runner, the
orchestrator waiting for them (``shared_steps``) and the Celery dispatcher.
"""

from __future__ import annotations

from sayiir_core.backends.step_queue import StepResult
from sayiir_core.codec import Codec
from sayiir_core.runtime.executor import TaskFailure, TaskOutcome, TaskSuccess


def step_result(outcome: TaskOutcome, worker_id: str) -> StepResult:
    """The ``StepResult`` to store for an outcome ``worker_id`` ran (``outcome_of`` reverses it)."""
    if isinstance(outcome, TaskSuccess):
        return StepResult(
            worker_id, outcome.started_at, outcome.finished_at, output=outcome.encoded
        )
    return StepResult(
        worker_id,
        outcome.started_at,
        outcome.finished_at,
        error=outcome.error,
        retryable=outcome.retryable,
        traceback=outcome.traceback,
    )


def outcome_of(result: StepResult, codec: Codec) -> TaskOutcome:
    """The executor outcome a stored ``StepResult`` stands for."""
    if result.error is None and result.output is not None:
        return TaskSuccess(
            codec.decode(result.output),
            result.output,
            result.started_at,
            result.finished_at,
            result.worker_id,
        )
    if result.error is None:
        raise AssertionError("a finished step has neither output nor error")
    return TaskFailure(
        result.error,
        result.retryable,
        result.traceback,
        result.started_at,
        result.finished_at,
        result.worker_id,
    )
