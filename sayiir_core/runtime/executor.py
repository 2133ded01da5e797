"""Where a step's function actually runs: the executor seam.

``LocalExecutor`` runs async tasks on the event loop and sync tasks in a bounded thread
pool, enforces timeouts for both, validates pydantic inputs, and encodes outputs with
the codec. Other executors (Celery dispatch) implement the same ``Executor`` protocol.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import SerializationError, TaskTimeoutError
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.runtime.context import TaskExecutionContext, set_task_context
from sayiir_core.workflow.graph import TaskNode
from sayiir_core.workflow.loop_result import LoopResult


@dataclass(frozen=True, slots=True)
class TaskRequest:
    workflow_id: str
    instance_id: str
    key: str
    task: TaskNode
    input: Any
    attempt: int
    workflow_metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    """``value`` is ``codec.decode(encoded)``: what a resume would read back.

    ``worker_id`` names the worker that ran the step when it was not the one advancing
    the instance (a shared step); ``None`` means the instance's own runner.
    """

    value: Any
    encoded: bytes
    started_at: float
    finished_at: float
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFailedOutcome:
    error: ErrorInfo
    retryable: bool
    traceback: str
    started_at: float
    finished_at: float
    worker_id: str | None = None


TaskOutcome = TaskSucceeded | TaskFailedOutcome


class Executor(Protocol):
    """Runs one attempt of one step and reports how it went; never raises for task errors."""

    async def execute(self, request: TaskRequest) -> TaskOutcome: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs tasks in this process.

    ``max_threads`` bounds the pool for sync tasks. A sync task that times out keeps its
    thread until the function returns (Python cannot kill a thread); its late result is
    discarded.
    """

    def __init__(self, *, codec: Codec = DEFAULT_CODEC, max_threads: int | None = None) -> None:
        self._codec = codec
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="sayiir-task")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def execute(self, request: TaskRequest) -> TaskOutcome:
        started = time.time()
        node = request.task
        try:
            argument = _validated_input(node, request.input)
            output = await self._call(request, argument)
            encoded = encode_output(self._codec, output, request.key)
            # The next step sees what a resume would read back; a scalar reads back as
            # itself, so only containers (tuples become lists...) pay for the decode.
            value = output if type(output) in _SCALARS else self._codec.decode(encoded)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            if not isinstance(error, Exception):
                raise
            failure = self._classify(request, error)
            return TaskFailedOutcome(
                failure[0], failure[1], _format_traceback(error), started, time.time()
            )
        return TaskSucceeded(value, encoded, started, time.time())

    async def _call(self, request: TaskRequest, argument: Any) -> Any:
        node = request.task
        context = TaskExecutionContext(
            workflow_id=request.workflow_id,
            instance_id=request.instance_id,
            task_id=node.task_id,
            step_key=request.key,
            attempt=request.attempt,
            metadata=node.metadata,
            workflow_metadata=(
                dict(request.workflow_metadata) if request.workflow_metadata is not None else None
            ),
        )
        timeout = node.metadata.timeout_secs
        is_async = _is_async(node.fn)
        try:
            # A sync task's clock starts when a pool thread picks it up, not while it
            # queues behind other tasks for a thread.
            async with asyncio.timeout(timeout if is_async else None) as deadline:
                if is_async:
                    return await _run_async(node.fn, argument, context)
                loop = asyncio.get_running_loop()
                start_clock = _deadline_starter(loop, deadline, timeout)
                run = functools.partial(_run_sync, node.fn, argument, context, start_clock)
                result = await loop.run_in_executor(self._pool, run)
                if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                    result = await result
                return result
        except TimeoutError:
            # Only our deadline is the task's timeout; a TimeoutError the task raised
            # itself (a socket timeout, say) is an ordinary task error.
            if deadline.expired():
                raise _DeadlineExceededError from None
            raise

    def _classify(self, request: TaskRequest, error: Exception) -> tuple[ErrorInfo, bool]:
        node = request.task
        policy = node.metadata.retries
        if isinstance(error, _DeadlineExceededError):
            seconds = node.metadata.timeout_secs
            timeout_error = TaskTimeoutError(
                f"task {node.task_id!r} timed out after {seconds}s",
                instance_id=request.instance_id,
                task_id=request.key,
                error_type="TaskTimeoutError",
            )
            info = ErrorInfo("TaskTimeoutError", str(timeout_error), request.key, "timeout")
            return info, policy is not None and policy.should_retry(timeout_error)
        if isinstance(error, _EncodingError):
            return ErrorInfo("SerializationError", str(error), request.key, "serialization"), False
        if _is_validation_error(error):
            message = f"input of task {node.task_id!r} is invalid: {error}"
            return ErrorInfo(type(error).__name__, message, request.key, "task"), False
        info = ErrorInfo(type(error).__name__, str(error), request.key, "task")
        return info, policy is not None and policy.should_retry(error)


_SCALARS = frozenset({int, float, str, bool, type(None)})


class _EncodingError(SerializationError):
    pass


class _DeadlineExceededError(Exception):
    """The attempt ran past the task's timeout."""


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


async def _run_async(fn: Callable[..., Any], argument: Any, context: TaskExecutionContext) -> Any:
    # Runs inside the step's own asyncio task, so the context var stays local to it.
    set_task_context(context)
    return await fn(argument)


def _deadline_starter(
    loop: asyncio.AbstractEventLoop, deadline: asyncio.Timeout, timeout: float | None
) -> Callable[[], None]:
    """Called on the pool thread as the task starts: arms the timeout from now."""

    def arm() -> None:
        if timeout is not None:
            loop.call_soon_threadsafe(lambda: deadline.reschedule(loop.time() + timeout))

    return arm


def _run_sync(
    fn: Callable[..., Any],
    argument: Any,
    context: TaskExecutionContext,
    on_start: Callable[[], None],
) -> Any:
    on_start()

    def call() -> Any:
        set_task_context(context)
        return fn(argument)

    return contextvars.Context().run(call)


def _pydantic_model(annotation: Any) -> Any:
    """The annotation if it is a pydantic model class (only if pydantic is loaded)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(annotation, type):
        return None
    return annotation if issubclass(annotation, pydantic.BaseModel) else None


def _validated_input(node: TaskNode, value: Any) -> Any:
    model = _pydantic_model(node.metadata.input_type)
    if model is None or isinstance(value, model):
        return value
    return model.model_validate(value)


def _is_validation_error(error: Exception) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(error, pydantic.ValidationError)


def _wire_output(output: Any) -> Any:
    if isinstance(output, LoopResult):
        output = output.to_dict()
        output["value"] = _wire_output(output["value"])
        return output
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(output, pydantic.BaseModel):
        return output.model_dump(mode="json")
    return output


def encode_or_raise(codec: Codec, value: Any, what: str) -> bytes:
    """Encode a workflow input or signal payload; ``SerializationError`` names ``what``."""
    try:
        return codec.encode(_wire_output(value))
    except (TypeError, ValueError) as error:
        raise SerializationError(f"{what} cannot be encoded as {codec.name}: {error}") from error


def _format_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).strip()


def encode_output(codec: Codec, output: Any, task_id: str) -> bytes:
    try:
        return codec.encode(_wire_output(output))
    except (TypeError, ValueError) as error:
        raise _EncodingError(
            f"output of task {task_id!r} cannot be encoded as {codec.name}: {error}",
            task_id=task_id,
            error_type="SerializationError",
        ) from error
