"""The blocking functions of the Sayiir 1.0 API, over the async engine.

Each call runs on the process's sayiir loop thread (see ``runtime.loop_thread``), but
``run_workflow`` without persistence, which can run on the caller's own thread (see
``runtime.caller_loop``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sayiir_core.backends.base import Backend, ConflictPolicy
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.runtime.checks import require_backend
from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.convert import error_for, result_or_raise
from sayiir_core.runtime.durable_runner import DurableRunner, default_owner_id
from sayiir_core.runtime.executor import LocalExecutor
from sayiir_core.runtime.history import EventListener
from sayiir_core.runtime.in_memory import in_memory_instance_id, run_in_memory_blocking
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.workflow import Workflow

_executor_lock = threading.Lock()
_shared_executor: LocalExecutor | None = None
# The claim owner of every durable run these functions start in this process: naming it
# costs a hostname and a random draw, more than a short run's own bookkeeping.
_process_owner_id: str | None = None


def _executor() -> LocalExecutor:
    """The thread pool for sync tasks of the runs these functions start."""
    global _shared_executor
    executor = _shared_executor
    if executor is not None:  # the common case, without the lock
        return executor
    with _executor_lock:
        if _shared_executor is None:
            _shared_executor = LocalExecutor()
        return _shared_executor


def _owner_id() -> str:
    """This process's claim owner for the runs started here (a forked child gets its own)."""
    global _process_owner_id
    if _process_owner_id is None:
        with _executor_lock:
            if _process_owner_id is None:
                _process_owner_id = default_owner_id()
    return _process_owner_id


def _forget_executor_in_child() -> None:
    # A forked child starts its own (the parent's pool threads are not in it), names its
    # own claim owner (the parent's id has the parent's pid), and the lock may have been
    # held by a parent thread at the fork.
    global _executor_lock, _shared_executor, _process_owner_id
    _executor_lock = threading.Lock()
    _shared_executor = None
    _process_owner_id = None


os.register_at_fork(after_in_child=_forget_executor_in_child)


def _runner(
    backend: Backend,
    conflict_policy: str | ConflictPolicy | None = None,
    on_event: EventListener | None = None,
) -> DurableRunner:
    return DurableRunner(
        backend,
        executor=_executor(),
        conflict_policy=conflict_policy,
        owner_id=_owner_id(),
        on_event=on_event,
    )


def run_workflow(
    workflow: Workflow,
    input_data: Any,
    *,
    instance_id: str | None = None,
    backend: Backend | None = None,
    conflict_policy: str | ConflictPolicy | None = None,
) -> Any:
    """Run ``workflow`` to completion and return its output.

    Without ``instance_id`` nothing is stored (the fastest path). With one, every step is
    checkpointed in ``backend``; if the run parks (delay, signal) this raises
    ``InvalidStateError`` — use ``run_durable_workflow`` to get the status instead. A
    failed task raises ``TaskError`` (or ``TaskTimeoutError``, ``SerializationError``),
    a cancelled run ``InstanceCancelledError``.

    Example::

        assert run_workflow(Flow("double").then(lambda x: x * 2).build(), 21) == 42
    """
    require_workflow(workflow, "run_workflow()")
    if backend is not None:
        require_backend(backend, "run_workflow(backend=...)")
    if instance_id is None:
        run_id = in_memory_instance_id(workflow)
        snapshot = run_in_memory_blocking(workflow, input_data, _executor(), run_id)
        if snapshot.error is not None:
            raise error_for(snapshot.error, run_id)
        return snapshot.output
    status = run_durable_workflow(
        workflow, instance_id, input_data, backend=backend, conflict_policy=conflict_policy
    )
    return result_or_raise(status)


def run_durable_workflow(
    workflow: Workflow,
    instance_id: str,
    input_data: Any,
    backend: Backend | None = None,
    conflict_policy: str | ConflictPolicy | None = None,
    *,
    on_event: EventListener | None = None,
) -> WorkflowStatus:
    """Run with a checkpoint after every step; returns the status when it finishes or parks.

    A workflow that reaches a delay or a signal wait parks (``waiting`` /
    ``awaiting_signal``); ``resume_workflow`` continues it later, in this process or
    another. ``backend`` defaults to a new ``InMemoryBackend``. ``on_event(instance_id,
    event)`` is called after each history event is durably written (progress display).
    """
    require_workflow(workflow, "run_durable_workflow()")
    if backend is not None:
        require_backend(backend, "run_durable_workflow(backend=...)")
    if backend is None:
        return run_sync(
            _run_on_new_memory(workflow, instance_id, input_data, conflict_policy, on_event)
        )
    runner = _runner(backend, conflict_policy, on_event)
    return run_sync(runner.run(workflow, instance_id, input_data))


def resume_workflow(
    workflow: Workflow,
    instance_id: str,
    backend: Backend,
    *,
    allow_definition_change: bool = False,
    on_event: EventListener | None = None,
) -> WorkflowStatus:
    """Continue an instance from its last checkpoint (after a crash, a delay or a signal).

    Raises ``DefinitionMismatchError`` if ``workflow``'s structure differs from the one
    that started the instance, unless ``allow_definition_change=True``.
    """
    require_workflow(workflow, "resume_workflow()")
    require_backend(backend, "resume_workflow(backend=...)")
    runner = _runner(backend, on_event=on_event)
    return run_sync(
        runner.resume(workflow, instance_id, allow_definition_change=allow_definition_change)
    )


def cancel_workflow(
    instance_id: str,
    backend: Backend,
    reason: str | None = None,
    cancelled_by: str | None = None,
) -> None:
    """Cancel an instance; a running one stops at its next checkpoint."""
    run_sync(InstanceControl(backend).cancel(instance_id, reason=reason, cancelled_by=cancelled_by))


def pause_workflow(
    instance_id: str,
    backend: Backend,
    reason: str | None = None,
    paused_by: str | None = None,
) -> None:
    """Pause an instance; a running one stops after its running steps checkpoint."""
    run_sync(InstanceControl(backend).pause(instance_id, reason=reason, paused_by=paused_by))


def unpause_workflow(instance_id: str, backend: Backend) -> None:
    """Make a paused instance runnable again (``resume_workflow`` or a worker continues it)."""
    run_sync(InstanceControl(backend).unpause(instance_id))


def send_signal(instance_id: str, signal_name: str, payload: Any, backend: Backend) -> None:
    """Buffer a signal for an instance (FIFO per name); it is consumed by ``wait_for_signal``."""
    run_sync(InstanceControl(backend).send_signal(instance_id, signal_name, payload))


async def _run_on_new_memory(
    workflow: Workflow,
    instance_id: str,
    input_data: Any,
    conflict_policy: str | ConflictPolicy | None,
    on_event: EventListener | None,
) -> WorkflowStatus:
    # The backend is created here, so it is closed here (the ownership rule).
    async with InMemoryBackend() as backend:
        return await _runner(backend, conflict_policy, on_event).run(
            workflow, instance_id, input_data
        )


__all__ = [
    "Status",
    "cancel_workflow",
    "pause_workflow",
    "resume_workflow",
    "run_durable_workflow",
    "run_workflow",
    "send_signal",
    "unpause_workflow",
]
