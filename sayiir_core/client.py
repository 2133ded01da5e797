"""``AsyncWorkflowClient`` and its blocking face ``WorkflowClient``.

A client submits and controls instances; it never runs steps (a ``Worker`` does).

Who closes the backend: whoever created it. A client handed a backend object uses it
(opening it if needed) and leaves it open; its owner closes it. A client made with
``from_url`` created its backend, and one given ``owns_backend=True`` was handed the
ownership: ``aclose()`` / ``close()`` (or leaving its ``with`` block) closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sayiir_core.backends.base import Backend, ConflictPolicy, HistoryEvent
from sayiir_core.backends.url import backend_from_url
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.runtime.control import InstanceControl, refuse_another_workflow
from sayiir_core.runtime.convert import result_or_raise, status_from
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.runtime.worker_intake import Reservation
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.workflow import Workflow

if TYPE_CHECKING:
    from sayiir_core.runtime.worker import Worker


class InstanceList(list[WorkflowStatus]):
    """A page of instances; ``next_cursor`` fetches the next page (``None`` at the end)."""

    next_cursor: str | None = None


class AsyncWorkflowClient:
    """Submit and control instances from async code.

    Example::

        async with AsyncWorkflowClient.from_url("sqlite:///app.db") as client:
            await client.submit(order_flow, "order-42", {"sku": "A1"})
            status = await client.status("order-42")
            receipt = await client.result("order-42", timeout=60)  # once a worker ran it

    Handed a backend (``AsyncWorkflowClient(backend)``), the client opens it on first
    use and never closes it: the code that created the backend does (``async with
    backend:``), so one backend can serve a client and workers. ``owns_backend=True``
    hands the backend over instead: ``aclose()`` then closes it (what ``from_url``
    does). ``async with`` on the client opens the backend on entry (a wrong URL fails
    there) and calls ``aclose()`` on exit.

    ``local_workers``: workers running (``await worker.run(...)``) on the event loop this
    client is used from, over the same backend. While one has a free slot, ``submit``
    stores the new instance already claimed by it and hands it over, so it starts at
    once: no wake-up, claim or ``pending -> running`` write on the way (see
    ``runtime/worker_intake.py``). The status then reads ``running``, not
    ``in_progress``. The FastAPI lifespan's client does this with its workers.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
        owns_backend: bool = False,
        workflows: Iterable[Workflow] = (),
        local_workers: Iterable[Worker] = (),
    ) -> None:
        self._control = InstanceControl(backend, codec=codec, conflict_policy=conflict_policy)
        # Known workflows let send_signal refuse a name they never wait for; a client
        # also learns every workflow it submits.
        self._control.know(*workflows)
        self._owns_backend = owns_backend
        self._closed = False
        self._local_workers = tuple(local_workers)
        for worker in self._local_workers:
            if worker.backend is not backend:
                raise ValueError(
                    f"local worker {worker.worker_id!r} runs on another backend object "
                    "than this client's; hand-overs need the same one"
                )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
        workflows: Iterable[Workflow] = (),
    ) -> Self:
        """A client on a backend it creates from ``url`` (see ``backend_from_url``).

        The client owns that backend: ``aclose()`` closes it.
        """
        backend = backend_from_url(url)
        return cls(
            backend,
            conflict_policy=conflict_policy,
            codec=codec,
            owns_backend=True,
            workflows=workflows,
        )

    @property
    def backend(self) -> Backend:
        return self._control.backend

    @property
    def _live(self) -> InstanceControl:
        """The control part, unless the client is closed."""
        if self._closed:
            raise RuntimeError("this workflow client is closed; create a new one")
        return self._control

    async def open(self) -> None:
        """Open the backend now rather than on first use (a wrong URL fails here)."""
        await self._live.open()

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.aclose()  # a backend we created may hold half-made connections
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def submit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        """Store a new instance (status ``in_progress``) for a worker to run.

        With a free ``local_workers`` slot the instance is stored claimed by that worker
        and starts at once (status ``running``).
        """
        control = self._live
        require_workflow(workflow, "submit()")
        reservation = await self._reserve(workflow)
        if reservation is None:
            return await control.submit(workflow, instance_id, input)
        with reservation:
            control.know(workflow)  # as control.submit does: signals to it are checked
            await control.open()
            new = control.new_instance(
                workflow,
                instance_id,
                input,
                control.clock(),
                owner=reservation.owner,
                lease_ttl=reservation.lease_ttl,
            )
            record, created = await reservation.create(control.backend, new, control.policy(None))
        if not created:
            refuse_another_workflow(record, workflow)
        return status_from(record, control.codec)

    async def _reserve(self, workflow: Workflow) -> Reservation | None:
        """A free slot of a local worker serving ``workflow``, if there is one now."""
        for worker in self._local_workers:
            intake = worker.intake
            reservation = await intake.reserve(workflow) if intake is not None else None
            if reservation is not None:
                return reservation
        return None

    async def status(self, instance_id: str) -> WorkflowStatus:
        return await self._live.status(instance_id)

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
        return await self._live.wait(instance_id, timeout=timeout, poll_interval=poll_interval)

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
        return await self._live.cancel(instance_id, reason=reason, cancelled_by=cancelled_by)

    async def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        return await self._live.pause(instance_id, reason=reason, paused_by=paused_by)

    async def unpause(self, instance_id: str) -> WorkflowStatus:
        return await self._live.unpause(instance_id)

    async def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        await self._live.send_signal(instance_id, signal_name, payload)

    async def get_task_result(self, instance_id: str, task_id: str) -> Any:
        """A step's checkpointed output, or ``None`` if it has not completed."""
        return await self._live.get_task_result(instance_id, task_id)

    async def input(self, instance_id: str) -> Any:
        """The input the instance was submitted with; ``InstanceNotFoundError`` if unknown."""
        control = self._live
        await control.open()
        record = await control.require(instance_id)
        return control.codec.decode(record.input)

    async def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        """Newest first; pass ``result.next_cursor`` as ``cursor`` for the next page."""
        items, next_cursor = await self._live.list_instances(
            status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
        )
        page = InstanceList(items)
        page.next_cursor = next_cursor
        return page

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        """Append-only events of an instance, oldest first."""
        return await self._live.history(instance_id)

    async def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        """Drop the checkpoints of ``task_id`` and later steps; the instance runs again."""
        return await self._live.retry_from(instance_id, task_id)

    async def aclose(self) -> None:
        """Close the client: its backend too if it created it (``from_url``).

        A backend the client was handed stays open for its owner to close. The client
        refuses calls afterwards (``RuntimeError``); closing twice is harmless.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_backend:
            await self._control.backend.close()


class WorkflowClient:
    """The blocking face of ``AsyncWorkflowClient``; same methods, same arguments.

    Example::

        with WorkflowClient.from_url("sqlite:///app.db") as client:
            client.submit(order_flow, "order-42", {"sku": "A1"})

    The same ownership rule: a backend handed to the client stays open when the client
    closes; one the client created (``from_url``) or was given with
    ``owns_backend=True`` is closed with it. Blocking code that builds a backend object
    itself hands it over that way, since closing one is a coroutine::

        client = WorkflowClient(PostgresBackend(url, max_connections=4), owns_backend=True)
    """

    def __init__(
        self,
        backend: Backend,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
        owns_backend: bool = False,
        workflows: Iterable[Workflow] = (),
    ) -> None:
        self._async = AsyncWorkflowClient(
            backend,
            conflict_policy=conflict_policy,
            codec=codec,
            owns_backend=owns_backend,
            workflows=workflows,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
        workflows: Iterable[Workflow] = (),
    ) -> Self:
        """A client on a backend it creates from ``url``; ``close()`` closes that backend."""
        backend = backend_from_url(url)
        return cls(
            backend,
            conflict_policy=conflict_policy,
            codec=codec,
            owns_backend=True,
            workflows=workflows,
        )

    @property
    def backend(self) -> Backend:
        return self._async.backend

    def open(self) -> None:
        """Open the backend now rather than on first use (a wrong URL fails here)."""
        run_sync(self._async.open())

    def __enter__(self) -> Self:
        try:
            self.open()
        except BaseException:
            self.close()  # a backend we created may hold half-made connections
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

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

    def input(self, instance_id: str) -> Any:
        """The input the instance was submitted with; ``InstanceNotFoundError`` if unknown."""
        return run_sync(self._async.input(instance_id))

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
        """Close the client: its backend too if it created it (``from_url``)."""
        run_sync(self._async.aclose())
