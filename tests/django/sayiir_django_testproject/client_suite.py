"""Transactional submit, written once and run on SQLite and PostgreSQL (``alias``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from sayiir_core import InstanceNotFoundError
from sayiir_django import get_client, submit_on_commit
from sayiir_django.backend import DjangoBackend
from sayiir_django.client import DjangoWorkflowClient
from sayiir_django_testproject.shop.workflows import approval, doubling


class RolledBackError(Exception):
    pass


def stored(alias: str, instance_id: str) -> bool:
    """Whether another connection (a backend thread of its own) sees the instance."""

    async def look() -> bool:
        backend = DjangoBackend(alias)
        try:
            return await backend.get_record(instance_id) is not None
        finally:
            await backend.close()

    return asyncio.run(look())


class WorkWaiter:
    """A thread waiting for the backend's wake-up of idle workers (as a worker does)."""

    def __init__(self, alias: str) -> None:
        self.woken = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._wait, args=(alias,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _wait(self, alias: str) -> None:
        async def wait() -> None:
            backend = DjangoBackend(alias)
            try:
                await _quiet(backend)
                self._ready.set()
                await backend.wait_for_work(60.0)
                self.woken.set()
            finally:
                await backend.close()

        asyncio.run(wait())

    def join(self) -> None:
        self._thread.join(70)


async def _quiet(backend: DjangoBackend) -> None:
    """Wait until no wake-up comes for a while: on PostgreSQL the LISTEN connection
    wakes everyone once when it comes up, as notifications may have been missed."""
    while True:
        started = time.monotonic()
        await backend.wait_for_work(0.3)
        if time.monotonic() - started >= 0.3:
            return


class ClientTests:
    """``get_client()`` and ``submit_on_commit`` on the database ``alias``."""

    alias: str

    @pytest.fixture
    def client(self) -> Iterator[DjangoWorkflowClient]:
        client = get_client(self.alias)
        yield client
        # The client of the process lives on; its own threads' connections must not
        # outlive the test database (this thread's connection is pytest-django's).
        client.close()

    def test_a_rolled_back_submit_leaves_no_instance(self, client: DjangoWorkflowClient) -> None:
        def order_then_fail() -> None:
            with transaction.atomic(using=self.alias):
                status = client.submit(doubling, "order-1", 21)
                assert status.status == "in_progress"
                # Inside the transaction the caller sees its own write; nobody else does.
                assert client.status("order-1").status == "in_progress"
                assert not stored(self.alias, "order-1")
                raise RolledBackError

        with pytest.raises(RolledBackError):
            order_then_fail()

        assert not stored(self.alias, "order-1")
        with pytest.raises(InstanceNotFoundError):
            client.status("order-1")

    def test_a_committed_submit_is_visible_and_wakes_workers_at_commit(
        self, client: DjangoWorkflowClient
    ) -> None:
        waiter = WorkWaiter(self.alias)
        with transaction.atomic(using=self.alias):
            client.submit(doubling, "order-2", 21)
            time.sleep(0.3)
            assert not waiter.woken.is_set(), "woken before the commit"
            assert not stored(self.alias, "order-2")

        assert waiter.woken.wait(10), "not woken by the commit"
        waiter.join()
        assert stored(self.alias, "order-2")
        assert client.status("order-2").status == "in_progress"

    def test_every_client_call_runs_on_the_callers_connection(
        self, client: DjangoWorkflowClient
    ) -> None:
        # Cancelling, pausing and signalling inside the transaction that submitted: on
        # another connection these would not find the instance (or, on SQLite, would
        # wait for the caller's own write lock).
        with transaction.atomic(using=self.alias):
            client.submit(approval, "order-3", 1)
            assert client.input("order-3") == 1
            client.send_signal("order-3", "approve", {"n": 1})
            client.pause("order-3", reason="hold")
            client.unpause("order-3")
            assert [e.kind for e in client.history("order-3")] == [
                "started",
                "signal_sent",
                "paused",
                "unpaused",
            ]
            client.cancel("order-3", reason="changed my mind")
            assert [s.instance_id for s in client.list_instances()] == ["order-3"]
        assert client.status("order-3").status == "cancelled"

    def test_submit_on_commit_returns_the_id_and_submits_after_the_commit(
        self, client: DjangoWorkflowClient
    ) -> None:
        with transaction.atomic(using=self.alias):
            instance_id = submit_on_commit(doubling, None, 4, using=self.alias)
            assert instance_id.startswith("doubling-")
            with pytest.raises(InstanceNotFoundError):
                client.status(instance_id)
        assert client.status(instance_id).status == "in_progress"

        def submit_then_fail() -> None:
            with transaction.atomic(using=self.alias):
                submit_on_commit(doubling, "never", 4, using=self.alias)
                raise RolledBackError

        with pytest.raises(RolledBackError):
            submit_then_fail()
        assert not stored(self.alias, "never")

    async def test_async_code_submits_with_asubmit_or_in_a_sync_transaction(
        self, client: DjangoWorkflowClient
    ) -> None:
        status = await client.asubmit(doubling, "async-1", 3)
        assert status.status == "in_progress"
        assert (await client.astatus("async-1")).status == "in_progress"

        # The pattern for an async view that needs a transaction: its sync part.
        @sync_to_async
        def order_then_fail() -> None:
            with transaction.atomic(using=self.alias):
                get_client(self.alias).submit(doubling, "async-2", 3)
                raise RolledBackError

        with pytest.raises(RolledBackError):
            await order_then_fail()
        with pytest.raises(InstanceNotFoundError):
            await client.astatus("async-2")
        await sync_to_async(connections.close_all, thread_sensitive=True)()
