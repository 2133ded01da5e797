"""The public surface: a curated ``__all__`` that matches Sayiir 1.0's names and more."""

from __future__ import annotations

import types

import sayiir_core

# Every name the Rust-core ``sayiir`` 1.0 package exports that a user program touches.
SAYIIR_1_0_NAMES = {
    "BackendError",
    "BranchBuilder",
    "Flow",
    "ForkBuilder",
    "InMemoryBackend",
    "InstanceAlreadyExistsError",
    "LoopResult",
    "NodeInfo",
    "OnMax",
    "RetryPolicy",
    "TaskError",
    "TaskExecutionContext",
    "TaskMetadata",
    "Worker",
    "WorkerHandle",
    "Workflow",
    "WorkflowClient",
    "WorkflowError",
    "WorkflowStatus",
    "cancel_workflow",
    "get_task_context",
    "parse_duration",
    "pause_workflow",
    "resume_workflow",
    "run_durable_workflow",
    "run_workflow",
    "send_signal",
    "task",
    "unpause_workflow",
}

BEYOND_SAYIIR = {
    "AsyncWorkflowClient",
    "DefinitionMismatchError",
    "SerializationError",
    "SignalTimeoutError",
    "SqliteBackend",
    "TaskTimeoutError",
    "backend_from_url",
}


def test_all_names_resolve() -> None:
    for name in sayiir_core.__all__:
        assert hasattr(sayiir_core, name), name


def test_all_is_sorted_and_unique() -> None:
    names = [name for name in sayiir_core.__all__ if name != "__version__"]
    assert names == sorted(names)
    assert len(set(sayiir_core.__all__)) == len(sayiir_core.__all__)


def test_sayiir_1_0_names_are_exported() -> None:
    assert set(sayiir_core.__all__) >= SAYIIR_1_0_NAMES


def test_extensions_are_exported() -> None:
    assert set(sayiir_core.__all__) >= BEYOND_SAYIIR


def test_no_private_or_module_leaks() -> None:
    for name in sayiir_core.__all__:  # lazily exported names appear once touched
        getattr(sayiir_core, name)
    public = {
        name
        for name, value in vars(sayiir_core).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(sayiir_core.__all__) - {"__version__"}


def test_exception_tree() -> None:
    assert issubclass(sayiir_core.WorkflowError, RuntimeError)
    for name in (
        "TaskError",
        "BackendError",
        "InstanceAlreadyExistsError",
        "DefinitionMismatchError",
        "SignalTimeoutError",
        "InstanceNotFoundError",
    ):
        assert issubclass(getattr(sayiir_core, name), sayiir_core.WorkflowError)
    assert issubclass(sayiir_core.TaskTimeoutError, sayiir_core.TaskError)
    assert issubclass(sayiir_core.SerializationError, sayiir_core.TaskError)
    assert issubclass(sayiir_core.LeaseLostError, sayiir_core.BackendError)
