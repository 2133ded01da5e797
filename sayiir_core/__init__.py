"""Sayiir for Python: durable workflows as a plain library.

Write plain functions, chain them with ``Flow``, and every step is checkpointed::

    from sayiir_core import Flow, SqliteBackend, run_workflow, task

    @task(retries=3, timeout="30s")
    def charge(order: dict) -> dict: ...

    wf = Flow("orders").then(validate).then(charge).build()
    run_workflow(wf, {"id": 1}, instance_id="order-1", backend=SqliteBackend("app.db"))

The public API matches the Sayiir 1.0 Python package (``import sayiir``), so switching
is a change of import.
"""

import typing as _typing

from sayiir_core.backends.base import Backend, ConflictPolicy, HistoryEvent
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.sqlite import SqliteBackend
from sayiir_core.backends.url import backend_from_url
from sayiir_core.client import AsyncWorkflowClient, InstanceList, WorkflowClient
from sayiir_core.codec import Codec, JsonCodec
from sayiir_core.durations import parse_duration
from sayiir_core.errors import (
    BackendError,
    DefinitionMismatchError,
    InstanceAlreadyExistsError,
    InstanceCancelledError,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseLostError,
    PayloadTooLargeError,
    SerializationError,
    SignalBufferFullError,
    SignalTimeoutError,
    TaskError,
    TaskTimeoutError,
    UnknownSignalError,
    WaitTimeoutError,
    WorkflowError,
)
from sayiir_core.runtime.context import TaskExecutionContext, get_task_context
from sayiir_core.runtime.worker import Worker, WorkerHandle
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.sync import (
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
    unpause_workflow,
)
from sayiir_core.telemetry import init_tracing, shutdown_tracing
from sayiir_core.workflow import (
    BranchBuilder,
    Flow,
    ForkBuilder,
    LoopResult,
    NodeInfo,
    OnMax,
    RetryPolicy,
    TaskMetadata,
    Workflow,
    task,
)

if _typing.TYPE_CHECKING:
    from sayiir_core.backends.postgres import PostgresBackend

__version__ = "0.1.0"


def __getattr__(name: str) -> _typing.Any:
    # PostgresBackend needs asyncpg (the "postgres" extra): import it on first use only.
    if name == "PostgresBackend":
        from sayiir_core.backends.url import load_postgres_backend

        backend_class = load_postgres_backend()
        globals()[name] = backend_class
        return backend_class
    raise AttributeError(f"module 'sayiir_core' has no attribute {name!r}")


__all__ = [
    "AsyncWorkflowClient",
    "Backend",
    "BackendError",
    "BranchBuilder",
    "Codec",
    "ConflictPolicy",
    "DefinitionMismatchError",
    "Flow",
    "ForkBuilder",
    "HistoryEvent",
    "InMemoryBackend",
    "InstanceAlreadyExistsError",
    "InstanceCancelledError",
    "InstanceList",
    "InstanceNotFoundError",
    "InvalidStateError",
    "JsonCodec",
    "LeaseLostError",
    "LoopResult",
    "NodeInfo",
    "OnMax",
    "PayloadTooLargeError",
    "PostgresBackend",
    "RetryPolicy",
    "SerializationError",
    "SignalBufferFullError",
    "SignalTimeoutError",
    "SqliteBackend",
    "Status",
    "TaskError",
    "TaskExecutionContext",
    "TaskMetadata",
    "TaskTimeoutError",
    "UnknownSignalError",
    "WaitTimeoutError",
    "Worker",
    "WorkerHandle",
    "Workflow",
    "WorkflowClient",
    "WorkflowError",
    "WorkflowStatus",
    "__version__",
    "backend_from_url",
    "cancel_workflow",
    "get_task_context",
    "init_tracing",
    "parse_duration",
    "pause_workflow",
    "resume_workflow",
    "run_durable_workflow",
    "run_workflow",
    "send_signal",
    "shutdown_tracing",
    "task",
    "unpause_workflow",
]
