"""The public surface: a curated ``__all__`` that matches Sayiir 1.0's names and more."""

from __future__ import annotations

import types

import pytest

import sayiir_celery
import sayiir_core
import sayiir_core.backends
import sayiir_core.runtime

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


# The seams an adapter (a framework integration, another executor or backend) builds on.
RUNTIME_SEAMS = {
    "DURABLE_RUN",
    "DurableRunner",
    "EventListener",
    "Executor",
    "InstanceControl",
    "LocalExecutor",
    "ParkPolicy",
    "TaskFailure",
    "TaskOutcome",
    "TaskRequest",
    "TaskSuccess",
    "Worker",
    "WorkerHandle",
    "default_owner_id",
    "run_claimed_step",
}

BACKEND_SEAMS = {
    "AdvanceQueue",
    "Backend",
    "ClaimedStep",
    "InMemoryBackend",
    "OpensAndCloses",
    "SqliteBackend",
    "StepQueue",
    "StepRef",
    "StepResult",
    "StepTicket",
    "advance_queue",
    "backend_from_url",
}

# The names issue 13 makes the Celery bridge's contract, and what its users touch.
CELERY_NAMES = {
    "STEP_TASK",
    "SWEEP_TASK",
    "BridgeClient",
    "CeleryConfigError",
    "ConfigProblem",
    "MessageError",
    "Route",
    "SayiirCelery",
    "StepMessage",
}

SUBPACKAGES = {
    "sayiir_core.runtime": (sayiir_core.runtime, RUNTIME_SEAMS),
    "sayiir_core.backends": (sayiir_core.backends, BACKEND_SEAMS),
    "sayiir_celery": (sayiir_celery, CELERY_NAMES),
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


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_a_subpackage_exports_its_seams(name: str) -> None:
    module, seams = SUBPACKAGES[name]
    exported = list(module.__all__)
    assert set(exported) >= seams
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for export in exported:
        assert getattr(module, export) is not None, export


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_a_subpackage_leaks_nothing_beyond_its_all(name: str) -> None:
    module, _ = SUBPACKAGES[name]
    public = {
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(module.__all__)


def test_the_runtime_seams_are_the_ones_the_core_uses() -> None:
    from sayiir_core.runtime.executor import LocalExecutor
    from sayiir_core.runtime.worker import Worker

    assert sayiir_core.runtime.Worker is sayiir_core.Worker is Worker
    assert sayiir_core.runtime.LocalExecutor is LocalExecutor
    executor = LocalExecutor()
    try:
        assert isinstance(executor, sayiir_core.runtime.Executor)
    finally:
        executor.close()
