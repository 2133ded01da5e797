"""``get_client()``: a ``WorkflowClient`` whose every call runs on the caller's connection.

The core's ``WorkflowClient`` runs its calls on the sayiir loop thread, where a Django
backend would use a connection of its own. This one drives the same async client
through ``asgiref.sync.async_to_sync`` instead, and the backend hands its ORM work back
to the calling thread, as Django's own async ORM does. So, inside
``transaction.atomic()``, a submit is part of the caller's transaction: rolled back,
no instance exists; committed, it is visible, and the workers are woken at the commit.

From async code, ``await client.asubmit(...)`` (and the other ``a``-prefixed methods)
run their ORM work with ``sync_to_async(thread_sensitive=True)``, in the request's
thread, like the ORM's own ``acreate``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import async_to_sync
from django.db import transaction

from sayiir_core import (
    AsyncWorkflowClient,
    HistoryEvent,
    InstanceList,
    Workflow,
    WorkflowClient,
    WorkflowStatus,
)
from sayiir_core.backends.base import ConflictPolicy
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.status import Status
from sayiir_django import registry
from sayiir_django.backend import DjangoBackend, on_callers_connection, reset_connection_routing
from sayiir_django.conf import sayiir_settings

P = ParamSpec("P")
T = TypeVar("T")


class DjangoWorkflowClient(WorkflowClient):
    """``WorkflowClient`` on a Django database, running on the caller's connection.

    Same methods and arguments as ``WorkflowClient``; each has an awaitable twin with
    an ``a`` prefix for async views (``asubmit``, ``astatus``, ...).
    """

    def __init__(
        self,
        backend: DjangoBackend,
        *,
        conflict_policy: str | ConflictPolicy | None = None,
        codec: Codec = DEFAULT_CODEC,
        workflows: Iterable[Workflow] = (),
    ) -> None:
        known = tuple(workflows)
        super().__init__(backend, conflict_policy=conflict_policy, codec=codec, workflows=known)
        self._client = AsyncWorkflowClient(
            backend, conflict_policy=conflict_policy, codec=codec, workflows=known
        )

    @property
    def backend(self) -> DjangoBackend:
        backend = self._client.backend
        assert isinstance(backend, DjangoBackend)
        return backend

    @property
    def using(self) -> str:
        """The database alias the instances are stored in."""
        return self.backend.using

    # -- async ------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Check the database now rather than on first use (missing tables fail here)."""
        await _routed(self._client.open)()

    async def asubmit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        """Store a new instance (status ``in_progress``) for a worker to run."""
        return await _routed(self._client.submit)(workflow, instance_id, input)

    async def astatus(self, instance_id: str) -> WorkflowStatus:
        return await _routed(self._client.status)(instance_id)

    async def await_finish(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as the sync face
        poll_interval: float | None = None,
    ) -> WorkflowStatus:
        """``wait``, awaitable (``await`` is a keyword, hence the name)."""
        return await _routed(self._client.wait)(
            instance_id, timeout=timeout, poll_interval=poll_interval
        )

    async def aresult(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as the sync face
        poll_interval: float | None = None,
    ) -> Any:
        return await _routed(self._client.result)(
            instance_id, timeout=timeout, poll_interval=poll_interval
        )

    async def acancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        return await _routed(self._client.cancel)(
            instance_id, reason=reason, cancelled_by=cancelled_by
        )

    async def apause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        return await _routed(self._client.pause)(instance_id, reason=reason, paused_by=paused_by)

    async def aunpause(self, instance_id: str) -> WorkflowStatus:
        return await _routed(self._client.unpause)(instance_id)

    async def asend_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        await _routed(self._client.send_signal)(instance_id, signal_name, payload)

    async def aget_task_result(self, instance_id: str, task_id: str) -> Any:
        return await _routed(self._client.get_task_result)(instance_id, task_id)

    async def ainput(self, instance_id: str) -> Any:
        return await _routed(self._client.input)(instance_id)

    async def alist_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        return await _routed(self._client.list_instances)(
            status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
        )

    async def ahistory(self, instance_id: str) -> list[HistoryEvent]:
        return await _routed(self._client.history)(instance_id)

    async def aretry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        return await _routed(self._client.retry_from)(instance_id, task_id)

    # -- sync: the WorkflowClient methods -----------------------------------------------

    def open(self) -> None:
        async_to_sync(self.aopen)()

    def submit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        return async_to_sync(self.asubmit)(workflow, instance_id, input)

    def status(self, instance_id: str) -> WorkflowStatus:
        return async_to_sync(self.astatus)(instance_id)

    def wait(
        self, instance_id: str, *, timeout: float | None = None, poll_interval: float | None = None
    ) -> WorkflowStatus:
        return async_to_sync(self.await_finish)(
            instance_id, timeout=timeout, poll_interval=poll_interval
        )

    def result(
        self, instance_id: str, *, timeout: float | None = None, poll_interval: float | None = None
    ) -> Any:
        return async_to_sync(self.aresult)(
            instance_id, timeout=timeout, poll_interval=poll_interval
        )

    def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> WorkflowStatus:
        return async_to_sync(self.acancel)(instance_id, reason=reason, cancelled_by=cancelled_by)

    def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> WorkflowStatus:
        return async_to_sync(self.apause)(instance_id, reason=reason, paused_by=paused_by)

    def unpause(self, instance_id: str) -> WorkflowStatus:
        return async_to_sync(self.aunpause)(instance_id)

    def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        async_to_sync(self.asend_signal)(instance_id, signal_name, payload)

    def get_task_result(self, instance_id: str, task_id: str) -> Any:
        return async_to_sync(self.aget_task_result)(instance_id, task_id)

    def input(self, instance_id: str) -> Any:
        return async_to_sync(self.ainput)(instance_id)

    def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        return async_to_sync(self.alist_instances)(
            status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
        )

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return async_to_sync(self.ahistory)(instance_id)

    def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        return async_to_sync(self.aretry_from)(instance_id, task_id)

    def close(self) -> None:
        """Close the backend's own threads and their connections.

        Unlike the core's clients, this one stays usable: ``get_client()`` hands one
        client per database to the whole process, so a close (at the end of a test, a
        management command) must not break the next caller; the threads start again on
        demand. The caller's own connection is Django's to close.
        """
        async_to_sync(self.backend.close)()


def _routed(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``method`` with the backend's ORM work sent to the caller's connection."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        token = on_callers_connection()
        try:
            return await method(*args, **kwargs)
        finally:
            reset_connection_routing(token)

    return call


_clients: dict[str, DjangoWorkflowClient] = {}
_clients_lock = threading.Lock()
_clients_pid = os.getpid()


def get_client(using: str | None = None) -> DjangoWorkflowClient:
    """The process's client on database ``using`` (default ``SAYIIR["DATABASE"]``)."""
    global _clients_pid
    alias = using or sayiir_settings().database
    with _clients_lock:
        if _clients_pid != os.getpid():  # a forked child builds its own
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(alias)
        if client is None:
            # The autodiscovered workflows, so a signal no workflow waits for is refused.
            client = _clients[alias] = DjangoWorkflowClient(
                DjangoBackend(alias), workflows=registry.workflows()
            )
        return client


def submit_on_commit(
    workflow: Workflow, instance_id: str | None, input: Any, *, using: str | None = None
) -> str:
    """Submit when the current transaction on ``using`` commits; returns the instance id.

    The input is encoded now, so a value that cannot be stored fails here rather than
    after the commit.
    """
    client = get_client(using)
    chosen = instance_id or f"{workflow.workflow_id}-{uuid.uuid4().hex}"
    DEFAULT_CODEC.encode(input)
    transaction.on_commit(lambda: client.submit(workflow, chosen, input), using=client.using)
    return chosen
