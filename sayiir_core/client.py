"""``AsyncWorkflowClient`` and its blocking face ``WorkflowClient``.

A client submits and controls instances; it never runs steps (a ``Worker`` does).
"""

from __future__ import annotations

from typing import Any

from sayiir_core.backends.base import Backend, ConflictPolicy, HistoryEvent
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.runtime.convert import result_or_raise
from sayiir_core.runtime.engine import Engine
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.workflow import Workflow


class InstanceList(list[WorkflowStatus]):
    """A page of instances; ``next_cursor`` fetches the next page (``None`` at the end)."""

    next_cursor: str | None = None


class AsyncWorkflowClient:
    """Submit and control instances from async code.

    Example::

        client = AsyncWorkflowClient(SqliteBackend("app.db"))
        await client.submit(order_flow, "order-42", {"sku": "A1"})
        status = await client.status("order-42")
        receipt = await client.result("order-42", timeout=60)  # once a worker ran it
    """

    def __init__(
        self,
        backend: Backend,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
    ) -> None:
        self._engine = Engine(backend, codec=codec, conflict_policy=conflict_policy)

    @property
    def backend(self) -> Backend:
        return self._engine.backend

    async def submit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        """Store a new instance (status ``pending``) for a worker to run."""
        return await self._engine.submit(workflow, instance_id, input)

    async def status(self, instance_id: str) -> WorkflowStatus:
        return await self._engine.status(instance_id)

    async def wait(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as the sync face
        poll_interval: float | None = None,
    ) -> WorkflowStatus:
        """Wait until the instance has finished (completed, failed or cancelled).

        Returns its final status. Raises ``WaitTimeoutError`` after ``timeout`` seconds
        (the instance runs on) and ``InstanceNotFoundError`` for an unknown id. The wait
        is woken by the finishing commit where the backend can push it (PostgreSQL from
        any process, memory and SQLite within this process); it also re-reads the
        instance every ``poll_interval`` seconds (default: the backend's: 1 s on
        PostgreSQL, 0.05 s on SQLite, whose other processes cannot push, 5 s in memory).
        """
        return await self._engine.wait(instance_id, timeout=timeout, poll_interval=poll_interval)

    async def result(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as the sync face
        poll_interval: float | None = None,
    ) -> Any:
        """Wait as ``wait`` does, then return the output, or raise why there is none.

        A failed instance raises its typed error (``TaskError``, ``TaskTimeoutError``...),
        a cancelled one ``InstanceCancelledError``.
        """
        status = await self.wait(instance_id, timeout=timeout, poll_interval=poll_interval)
        return result_or_raise(status)

    async def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        return await self._engine.cancel(instance_id, reason=reason, cancelled_by=cancelled_by)

    async def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        return await self._engine.pause(instance_id, reason=reason, paused_by=paused_by)

    async def unpause(self, instance_id: str) -> WorkflowStatus:
        return await self._engine.unpause(instance_id)

    async def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        await self._engine.send_signal(instance_id, signal_name, payload)

    async def get_task_result(self, instance_id: str, task_id: str) -> Any:
        """A step's checkpointed output, or ``None`` if it has not completed."""
        return await self._engine.get_task_result(instance_id, task_id)

    async def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        """Newest first; pass ``result.next_cursor`` as ``cursor`` for the next page."""
        items, next_cursor = await self._engine.list_instances(
            status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
        )
        page = InstanceList(items)
        page.next_cursor = next_cursor
        return page

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        """Append-only events of an instance, oldest first."""
        await self._engine.open()
        return await self._engine.backend.history(instance_id)

    async def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        """Drop the checkpoints of ``task_id`` and later steps; the instance runs again."""
        return await self._engine.retry_from(instance_id, task_id)

    async def aclose(self) -> None:
        await self._engine.backend.close()


class WorkflowClient:
    """The blocking face of ``AsyncWorkflowClient``; same methods, same arguments."""

    def __init__(
        self,
        backend: Backend,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
    ) -> None:
        self._async = AsyncWorkflowClient(backend, conflict_policy=conflict_policy, codec=codec)

    @property
    def backend(self) -> Backend:
        return self._async.backend

    def submit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        return run_sync(self._async.submit(workflow, instance_id, input))

    def status(self, instance_id: str) -> WorkflowStatus:
        return run_sync(self._async.status(instance_id))

    def wait(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float | None = None,
    ) -> WorkflowStatus:
        return run_sync(self._async.wait(instance_id, timeout=timeout, poll_interval=poll_interval))

    def result(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float | None = None,
    ) -> Any:
        return run_sync(
            self._async.result(instance_id, timeout=timeout, poll_interval=poll_interval)
        )

    def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        return run_sync(self._async.cancel(instance_id, reason=reason, cancelled_by=cancelled_by))

    def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        return run_sync(self._async.pause(instance_id, reason=reason, paused_by=paused_by))

    def unpause(self, instance_id: str) -> WorkflowStatus:
        return run_sync(self._async.unpause(instance_id))

    def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        run_sync(self._async.send_signal(instance_id, signal_name, payload))

    def get_task_result(self, instance_id: str, task_id: str) -> Any:
        return run_sync(self._async.get_task_result(instance_id, task_id))

    def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        return run_sync(
            self._async.list_instances(
                status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
            )
        )

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return run_sync(self._async.history(instance_id))

    def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        return run_sync(self._async.retry_from(instance_id, task_id))

    def close(self) -> None:
        run_sync(self._async.aclose())
