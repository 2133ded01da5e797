"""``DjangoBackend``: the core's ``Backend``, ``StepQueue`` and ``AdvanceQueue`` through the
Django ORM.

Every operation is one transaction on a configurable database alias (SQLite and
PostgreSQL are tested). The ORM is synchronous, so an operation runs off the event loop,
on one of the backend's own threads (each keeps its own connection, closed by
``close()``) — or, for a ``sayiir_django`` client, on the caller's own connection, which
puts a submit inside ``transaction.atomic()`` into the caller's transaction.

Claims: ``select_for_update(skip_locked=True)`` on PostgreSQL. On SQLite a write
transaction holds the database's one write lock, so two claims are taken one after the
other (set ``"transaction_mode": "IMMEDIATE"``, which the system checks ask for, so a
transaction takes the lock when it begins); "database is locked" is retried, never
raised. Record transitions come from ``sayiir_core.backends.rules``, like every backend's.
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from asgiref.sync import sync_to_async

from sayiir_core.backends.base import (
    BufferedSignal,
    Claim,
    ConflictPolicy,
    ControlRequest,
    HistoryEvent,
    InstancePage,
    InstanceRecord,
    LoadedInstance,
    NewInstance,
    OpensAndCloses,
    StepWrite,
)
from sayiir_core.backends.notify import FinishWatch
from sayiir_core.backends.stats import ReadyBacklog
from sayiir_core.backends.step_queue import ClaimedStep, StepRef, StepResult, StepTicket
from sayiir_core.status import Status
from sayiir_django import _advance as advance
from sayiir_django import _control as control
from sayiir_django import _operations as ops
from sayiir_django import _stats
from sayiir_django import _step_queue as steps
from sayiir_django._threads import ConnectionThreads
from sayiir_django._transactions import Database
from sayiir_django._wakeups import Listener, notifiers_for
from sayiir_django.conf import sayiir_settings

T = TypeVar("T")

# How often a client waiting for a result re-reads the instance (see watch_finish):
# PostgreSQL pushes finishes from every process; other databases only from this one.
_FINISH_POLL_PUSHED = 1.0
_FINISH_POLL_POLLED = 0.05

_on_callers_connection: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sayiir_django_on_callers_connection", default=False
)


def on_callers_connection() -> contextvars.Token[bool]:
    """From here on in this context, run ORM work on the caller's connection.

    Set by the ``sayiir_django`` client around each call; reset with the returned token.
    """
    return _on_callers_connection.set(True)


def reset_connection_routing(token: contextvars.Token[bool]) -> None:
    _on_callers_connection.reset(token)


class DjangoBackend(OpensAndCloses):
    """Workflows stored in the Django database ``using`` (default ``SAYIIR["DATABASE"]``).

    ``max_threads`` bounds the threads (and so the connections) running its ORM work;
    a worker wants about its concurrency plus two. On SQLite one thread runs it all.

    Example::

        backend = DjangoBackend()
        worker = Worker("worker-1", backend, concurrency=8)
        await worker.run(registry.workflows())
    """

    def __init__(self, using: str | None = None, *, max_threads: int = 8) -> None:
        config = sayiir_settings()
        self._db = Database(using or config.database, config.sqlite_lock_timeout)
        self.using = self._db.alias
        if self._db.vendor == "sqlite":
            # SQLite writes one transaction at a time, so more threads only queue for its
            # lock and the GIL; one, as SqliteBackend has, ran a worker's S2 (16 at once)
            # about 1.4x faster than concurrency + 2 of them.
            max_threads = 1
        self._threads = ConnectionThreads(max_threads, f"sayiir-orm-{self.using}")
        self._listener = Listener(self.using)
        self._notifiers = notifiers_for(self.using)
        self._checked = False

    def __repr__(self) -> str:
        return f"DjangoBackend(using={self.using!r})"

    # -- running ORM work ----------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if _on_callers_connection.get():
            # The caller's thread (and so its connection and transaction): asgiref routes
            # thread-sensitive work back to the sync thread that is waiting on us.
            return await sync_to_async(fn, thread_sensitive=True)()
        return await asyncio.wrap_future(self._threads.submit(fn))

    def _pushes(self) -> bool:
        return self._db.vendor == "postgresql"

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Check that the tables exist (``manage.py migrate`` creates them); idempotent."""
        if not self._checked:
            await asyncio.wrap_future(self._threads.submit(lambda: ops.check_tables(self._db)))
            self._checked = True

    async def close(self) -> None:
        """Stop the listener and the threads, closing their connections."""
        await asyncio.to_thread(self._listener.stop)
        await asyncio.to_thread(self._threads.shutdown)
        self._checked = False

    async def wait_for_work(self, max_wait: float) -> None:
        if self._pushes():
            self._listener.ensure_started()
        await self._notifiers.work.wait(max_wait)

    def watch_finish(self, instance_id: str) -> AbstractAsyncContextManager[FinishWatch]:
        if self._pushes():
            self._listener.ensure_started()
            return self._notifiers.finish.watch(instance_id, _FINISH_POLL_PUSHED)
        return self._notifiers.finish.watch(instance_id, _FINISH_POLL_POLLED)

    # -- the Backend protocol -------------------------------------------------------------

    async def create(self, new: NewInstance, policy: ConflictPolicy) -> tuple[InstanceRecord, bool]:
        return await self._run(lambda: ops.create(self._db, new, policy))

    async def load(self, instance_id: str) -> LoadedInstance | None:
        return await self._run(lambda: ops.load(self._db, instance_id))

    async def get_record(self, instance_id: str) -> InstanceRecord | None:
        return await self._run(lambda: ops.get_record(self._db, instance_id))

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return await self._run(lambda: ops.get_checkpoint(self._db, instance_id, key))

    async def claim(self, instance_id: str, owner: str, ttl: float, now: float) -> Claim:
        return await self._run(lambda: ops.claim(self._db, instance_id, owner, now + ttl))

    async def claim_next(
        self, owner: str, workflows: Mapping[str, str], ttl: float, now: float, limit: int
    ) -> list[Claim]:
        if limit < 1 or not workflows:
            return []
        definitions = dict(workflows)
        return await self._run(
            lambda: ops.claim_next(self._db, owner, definitions, now, now + ttl, limit)
        )

    async def renew(self, instance_id: str, token: int, ttl: float, now: float) -> bool:
        return await self._run(lambda: ops.renew(self._db, instance_id, token, now + ttl))

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        commit_id = secrets.randbits(63)
        return await self._run(lambda: ops.commit(self._db, instance_id, token, write, commit_id))

    async def request_control(
        self,
        instance_id: str,
        request: ControlRequest,
        reason: str | None,
        by: str | None,
        now: float,
    ) -> InstanceRecord:
        return await self._run(
            lambda: control.request_control(self._db, instance_id, request, reason, by, now)
        )

    async def unpause(self, instance_id: str, now: float) -> InstanceRecord:
        return await self._run(lambda: control.unpause(self._db, instance_id, now))

    async def send_signal(self, instance_id: str, name: str, payload: bytes, now: float) -> None:
        await self._run(lambda: control.send_signal(self._db, instance_id, name, payload, now))

    async def next_signal(self, instance_id: str, name: str) -> BufferedSignal | None:
        return await self._run(lambda: control.next_signal(self._db, instance_id, name))

    async def list_instances(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstancePage:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        return await self._run(
            lambda: control.list_instances(self._db, status, workflow_id, limit, cursor)
        )

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        return await self._run(lambda: control.history(self._db, instance_id))

    async def reset_from(self, instance_id: str, task_id: str, now: float) -> InstanceRecord:
        return await self._run(lambda: control.reset_from(self._db, instance_id, task_id, now))

    # -- the StepQueue protocol (sayiir_core.backends.step_queue) ---------------------------

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        if tickets:
            batch = list(tickets)
            await self._run(lambda: steps.publish(self._db, batch))

    async def claim_steps(
        self,
        owner: str,
        workflows: Mapping[str, str],
        ttl: float,
        now: float,
        limit: int,
        *,
        instances: Collection[str] | None = None,
    ) -> list[ClaimedStep]:
        if limit < 1 or not workflows:
            return []
        definitions = dict(workflows)
        only = None if instances is None else list(instances)
        return await self._run(
            lambda: steps.claim(self._db, owner, definitions, now, now + ttl, limit, only)
        )

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        return await self._run(lambda: steps.claim_one(self._db, ref, owner, now, now + ttl))

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        return await self._run(lambda: steps.renew(self._db, ref, token, now + ttl))

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        return await self._run(lambda: steps.finish(self._db, ref, token, result))

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        if not refs:
            return {}
        wanted = list(refs)
        return await self._run(lambda: steps.results(self._db, wanted))

    async def wait_for_step_results(self, max_wait: float) -> None:
        if self._pushes():
            self._listener.ensure_started()
        await self._notifiers.steps.wait(max_wait)

    # -- the AdvanceQueue protocol (sayiir_core.backends.step_queue), one transaction each --

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        wanted = dict(definitions)
        return await self._run(
            lambda: advance.claim_if_free(self._db, instance_id, owner, wanted, now, now + ttl)
        )

    async def commit_and_publish(
        self, instance_id: str, token: int, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        commit_id = secrets.randbits(63)
        batch = list(tickets)
        return await self._run(
            lambda: advance.commit_and_publish(
                self._db, instance_id, token, write, batch, commit_id
            )
        )

    # -- BackendStats (sayiir_core.backends.stats), for the gauges ------------------------

    async def count_by_status(self) -> dict[Status, int]:
        return await self._run(lambda: _stats.count_by_status(self._db))

    async def ready_backlog(self, now: float) -> ReadyBacklog:
        return await self._run(lambda: _stats.ready_backlog(self._db, now))
