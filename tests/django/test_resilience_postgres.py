"""A worker whose PostgreSQL connections are all killed (pg_terminate_backend) carries on."""

from __future__ import annotations

import time

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from pytest_django import Settings
from sayiir_django_testproject.shop.models import Receipt
from sayiir_django_testproject.shop.workflows import checkout
from sayiir_django_testproject.support import require_postgres

from sayiir_core.runtime import Worker
from sayiir_django import get_client
from sayiir_django.backend import DjangoBackend
from sayiir_django.executor import DjangoExecutor
from sayiir_django.models import Checkpoint

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True, databases=["postgres"]),
]


def terminate_every_connection() -> int:
    """Kill every session on the test database but this one; returns how many."""
    params = connections["postgres"].get_connection_params()
    database = params["dbname"]
    with psycopg.connect(
        host=params["host"], port=params["port"], user=params["user"], dbname="postgres"
    ) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        ).fetchall()
    return len(rows)


def test_a_worker_survives_its_connections_being_terminated(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("SAYIIR_TEST_STEP_SECONDS", "0.3")
    settings.SAYIIR = {**settings.SAYIIR, "DATABASE": "postgres"}  # where the tasks write
    client = get_client("postgres")
    orders = [f"order-{n}" for n in range(1, 5)]
    for n, instance_id in enumerate(orders, 1):
        client.submit(checkout, instance_id, {"items": n})
    backend = DjangoBackend("postgres", max_threads=6)
    executor = DjangoExecutor(max_threads=4)
    worker = Worker(
        "survivor", backend, concurrency=4, poll_interval=0.2, claim_ttl=30, executor=executor
    )
    handle = worker.start([checkout])
    try:
        deadline = time.monotonic() + 60
        while not Checkpoint.objects.using("postgres").exists():
            assert time.monotonic() < deadline, "no step completed"
            time.sleep(0.05)

        killed = terminate_every_connection()
        assert killed >= 3  # the worker's, its LISTEN connection's, this test's

        for instance_id in orders:
            status = client.wait(instance_id, timeout=60)
            assert status.status == "completed", status.error
        assert sorted(Receipt.objects.using("postgres").values_list("order", flat=True)) == [
            1,
            2,
            3,
            4,
        ]
    finally:
        handle.shutdown()
        handle.join(30)
        executor.close()
        async_to_sync(backend.close)()
        client.close()
