"""Where a step's function actually runs: the executor seam.

``LocalExecutor`` runs async tasks on the event loop and sync tasks on daemon task
threads (``task_threads.py``), or inline on a loop private to one run (``caller_loop``),
enforces timeouts for both, validates pydantic inputs, and encodes outputs with the
codec. Other executors (Celery dispatch) implement the same ``Executor`` protocol.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import SerializationError, TaskTimeoutError
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.runtime.caller_loop import ctrl_c_during_caller_run
from sayiir_core.runtime.context import TaskExecutionContext, set_task_context
from sayiir_core.runtime.sync_calls import awaited, call_sync_task, run_inline
from sayiir_core.runtime.task_errors import format_traceback, task_traceback
from sayiir_core.runtime.task_threads import TaskThreads
from sayiir_core.telemetry.steps import observe_step
from sayiir_core.workflow.graph import TaskNode
from sayiir_core.workflow.loop_result import LoopResult

if TYPE_CHECKING:
    from opentelemetry.context import Context


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One attempt of one step, as the runner hands it to an ``Executor``.

    ``key`` is the step key (``charge``, ``resize[3]``, ``poll#2``): the task id plus
    where in a loop or map the step is; ``task`` is the graph node with the function
    and its metadata (timeout, retries); ``input`` is the decoded input value;
    ``attempt`` counts from 1.
    """

    workflow_id: str
    instance_id: str
    key: str
    task: TaskNode
    input: Any
    attempt: int
    workflow_metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class TaskSuccess:
    """The attempt returned: ``value`` is ``codec.decode(encoded)``, what a resume reads back.

    ``worker_id`` names the worker that ran the step when it was not the one advancing
    the instance (a shared step); ``None`` means the instance's own runner. Times are
    seconds since the epoch.
    """

    value: Any
    encoded: bytes
    started_at: float
    finished_at: float
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """The attempt failed: ``error`` is stored with the instance, ``traceback`` in history.

    ``retryable`` says whether the task's retry policy allows another attempt for this
    error (the runner still checks how many attempts are left).
    """

    error: ErrorInfo
    retryable: bool
    traceback: str
    started_at: float
    finished_at: float
    worker_id: str | None = None


TaskOutcome = TaskSuccess | TaskFailure
"""What ``Executor.execute`` returns for one attempt."""


@runtime_checkable
class Executor(Protocol):
    """Runs one attempt of one step and reports how it went; never raises for task errors.

    The seam for running steps elsewhere (another process, a Celery fleet): the runner
    calls ``execute`` for each attempt and checkpoints the outcome it gets back. A task
    error, a timeout or an output the codec cannot encode is a ``TaskFailure``;
    ``asyncio.CancelledError`` (the instance was cancelled or its lease lost) propagates.
    An executor that hands the step to another process instead of running it raises
    ``StepDispatched``. ``close`` releases the executor's resources; the owner of the
    executor calls it.
    """

    async def execute(self, request: TaskRequest) -> TaskOutcome: ...

    def close(self) -> None: ...


class RunsStepsInline(Protocol):
    """An executor that can run some steps on the calling thread, blocking its loop."""

    def runs_inline(self, request: TaskRequest) -> bool:
        """Whether ``execute_inline`` may run this step (it would wait for nothing)."""
        ...

    async def execute_inline(self, request: TaskRequest) -> TaskOutcome:
        """``execute``, with the step run on this thread while the event loop waits."""
        ...


class StepDispatched(Exception):  # noqa: N818 - a signal to the runner, not an error
    """Raised by ``Executor.execute`` when the step was handed to another process.

    Not a task error: the step runs elsewhere and its outcome is fed to a later run of
    the instance (``sayiir_core.runtime.dispatch``). The runner records the step under
    ``control["dispatched"]`` (``{step_key: attempt}``), does not start it again, and
    once nothing runs in process parks the instance as ``waiting`` until ``check_at``
    (seconds since the epoch) at the latest.
    """

    def __init__(self, key: str, check_at: float) -> None:
        super().__init__(f"step {key!r} was dispatched to another process")
        self.key = key
        self.check_at = check_at


class LocalExecutor:
    """Runs tasks in this process.

    ``max_threads`` bounds the daemon threads for sync tasks (default ``min(32, cpu +
    4)``), started as sync tasks come. A task's timeout runs from the moment the step is
    due, also while it queues for a thread. A sync task that times out keeps its thread
    until the function returns (Python cannot kill a thread), but that thread no longer
    counts: a new one takes its place, its late result is discarded, and exit never
    waits for it. In a process forked from the one that started the threads, fresh
    ones are started: the inherited ones do not exist there.

    Any exception a task raises is the attempt's failure, ``BaseException`` too
    (``sys.exit()``, ``KeyboardInterrupt``, ``GeneratorExit``): retried or failed per
    the task's policy, never the engine's death. The exception: a
    ``KeyboardInterrupt`` in an async task running on the main thread is the user's
    Ctrl-C, and propagates.
    """

    def __init__(self, *, codec: Codec = DEFAULT_CODEC, max_threads: int | None = None) -> None:
        self._codec = codec
        self._max_threads = max_threads
        self._pool: TaskThreads | None = None
        self._closed = False
        _live_executors.add(self)

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.close()

    @property
    def abandoned_threads(self) -> int:
        """Threads still running a sync task that timed out or was cancelled."""
        return 0 if self._pool is None else self._pool.abandoned_threads

    @property
    def threads_stuck(self) -> bool:
        """Every thread for sync tasks has run one call for ``TaskThreads.STUCK_AFTER`` s."""
        return self._pool is not None and self._pool.stuck

    def _thread_pool(self) -> TaskThreads:
        if self._closed:
            raise RuntimeError("this LocalExecutor is closed")
        if self._pool is None:
            self._pool = TaskThreads(self._max_threads)
        return self._pool

    def _forget_pool_after_fork(self) -> None:
        # The pool's threads stayed in the parent; its queue and idle count describe them.
        # Shutting it down here would wait for threads that do not exist: just drop it.
        self._pool = None

    async def execute(self, request: TaskRequest) -> TaskOutcome:
        # Nobody can have switched telemetry on before importing OpenTelemetry: then the
        # off path costs one dictionary lookup.
        if "opentelemetry" not in sys.modules:
            return await self._attempt(request, None, False)
        return await self._observed(request, False)

    def runs_inline(self, request: TaskRequest) -> bool:
        """A sync step without a timeout: run inline, it has nothing to be timed against."""
        node = request.task
        return node.metadata.timeout_secs is None and not is_async_callable(node.fn)

    async def execute_inline(self, request: TaskRequest) -> TaskOutcome:
        """Run a step ``runs_inline`` accepts on this thread; for a loop private to one run."""
        if "opentelemetry" not in sys.modules:
            return await self._attempt(request, None, True)
        return await self._observed(request, True)

    async def _observed(self, request: TaskRequest, inline: bool) -> TaskOutcome:
        observation = observe_step(request)
        if observation is None:
            return await self._attempt(request, None, inline)
        with observation:
            outcome = await self._attempt(request, observation.context, inline)
            observation.finish(outcome)
        return outcome

    async def _attempt(
        self, request: TaskRequest, trace_context: Context | None, inline: bool
    ) -> TaskOutcome:
        started = time.time()
        node = request.task
        try:
            argument = _validated_input(node, request.input)
            if inline:
                output = run_inline(node.fn, argument, _task_context(request), trace_context)
                if inspect.isawaitable(output):  # a sync callable that returned a coroutine
                    output = await awaited(output)
            else:
                output = await self._call(request, argument, trace_context)
            encoded = encode_output(self._codec, output, request.key)
            # The next step sees what a resume would read back; a scalar reads back as
            # itself, so only containers (tuples become lists...) pay for the decode.
            value = output if type(output) in _SCALARS else self._codec.decode(encoded)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt) and _is_users_ctrl_c(node):
                raise
            failure = self._classify(request, error)
            return TaskFailure(
                failure[0], failure[1], format_traceback(error), started, time.time()
            )
        return TaskSuccess(value, encoded, started, time.time())

    async def _call(
        self, request: TaskRequest, argument: Any, trace_context: Context | None
    ) -> Any:
        node = request.task
        context = _task_context(request)
        timeout = node.metadata.timeout_secs
        if timeout is None:  # nothing to enforce: no timeout scope to enter and leave
            if is_async_callable(node.fn):
                return await _run_async(node.fn, argument, context)
            return await self._on_thread(request, argument, context, trace_context)
        try:
            # The clock runs from the moment the step is due, also while a sync task
            # queues for a thread: a timeout must hold whatever the threads are doing.
            async with asyncio.timeout(timeout) as deadline:
                if is_async_callable(node.fn):
                    return await _run_async(node.fn, argument, context)
                return await self._on_thread(request, argument, context, trace_context)
        except TimeoutError:
            # Only our deadline is the task's timeout; a TimeoutError the task raised
            # itself (a socket timeout, say) is an ordinary task error.
            if deadline.expired():
                raise _DeadlineExceededError from None
            raise

    async def _on_thread(
        self,
        request: TaskRequest,
        argument: Any,
        context: TaskExecutionContext,
        trace_context: Context | None,
    ) -> Any:
        """Run a sync task on a task thread and wait for it (see ``task_threads.py``)."""
        threads = self._thread_pool()
        call = functools.partial(call_sync_task, request.task.fn, argument, context, trace_context)
        future, handle = threads.submit_to_loop(
            asyncio.get_running_loop(), call, f"{request.key!r} of {request.instance_id!r}"
        )
        try:
            result = await future
        except BaseException:
            threads.abandon(handle)  # timed out or cancelled while queued or running
            raise
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            result = await awaited(result)
        return result

    def _classify(self, request: TaskRequest, error: BaseException) -> tuple[ErrorInfo, bool]:
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
            info = ErrorInfo("TaskTimeoutError", safe_str(timeout_error), request.key, "timeout")
            return info, policy is not None and policy.should_retry(timeout_error)
        if isinstance(error, _EncodingError):
            return ErrorInfo("SerializationError", str(error), request.key, "serialization"), False
        if _is_validation_error(error):
            message = f"input of task {node.task_id!r} is invalid: {safe_str(error)}"
            return ErrorInfo(type(error).__name__, message, request.key, "task"), False
        info = ErrorInfo(
            type(error).__name__, safe_str(error), request.key, "task", task_traceback(error)
        )
        return info, policy is not None and policy.should_retry(error)


_live_executors: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for executor in list(_live_executors):
        executor._forget_pool_after_fork()


os.register_at_fork(after_in_child=_reset_pools_in_child)

_SCALARS = frozenset({int, float, str, bool, type(None)})


class _EncodingError(SerializationError):
    pass


class _DeadlineExceededError(Exception):
    """The attempt ran past the task's timeout."""


def _task_context(request: TaskRequest) -> TaskExecutionContext:
    node = request.task
    return TaskExecutionContext(
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


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` task."""
    if type(fn) is types.FunctionType:  # what inspect checks for a plain function, sooner
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


async def _run_async(fn: Callable[..., Any], argument: Any, context: TaskExecutionContext) -> Any:
    # Runs inside the step's own asyncio task, so the context var stays local to it.
    set_task_context(context)
    return await fn(argument)


def _is_users_ctrl_c(node: TaskNode) -> bool:
    """A ``KeyboardInterrupt`` seen by an async task on the main thread may be Ctrl-C.

    Signals reach only the main thread; sync tasks run on task threads and the sync
    API's loop runs on its own thread, so there a ``KeyboardInterrupt`` can only have
    been raised by the task itself. A run on the caller's own loop (``caller_loop``)
    notes a real Ctrl-C, so there the two are told apart.
    """
    pressed = ctrl_c_during_caller_run()
    if pressed is not None:
        return pressed
    return is_async_callable(node.fn) and threading.current_thread() is threading.main_thread()


def safe_str(error: BaseException) -> str:
    """``str(error)``, or a description when the exception's ``__str__`` itself raises."""
    try:
        return str(error)
    except Exception as broken:  # a task's exception class may be arbitrarily broken
        return f"<{type(error).__name__}: str() failed with {type(broken).__name__}>"


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


def _is_validation_error(error: BaseException) -> bool:
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


def encode_output(codec: Codec, output: Any, task_id: str) -> bytes:
    try:
        return codec.encode(_wire_output(output))
    except (TypeError, ValueError) as error:
        raise _EncodingError(
            f"output of task {task_id!r} cannot be encoded as {codec.name}: {error}",
            task_id=task_id,
            error_type="SerializationError",
        ) from error
