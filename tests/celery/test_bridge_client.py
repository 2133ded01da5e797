"""``bridge.client``: who closes the bridge's backend, and what ``list_instances`` shows."""

from __future__ import annotations

import secrets

import asyncpg
import pytest
from celery import Celery

from sayiir_celery import SayiirCelery
from sayiir_celery.sweeper import LEASE_INSTANCE, LEASE_WORKFLOW, SweeperLease
from sayiir_core import Flow, InMemoryBackend, WorkflowClient, task
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.runtime.loop_thread import run_sync


@task("double")
def double(x: int) -> int:
    return 2 * x


FLOW = Flow("client_parts").then(double).build()


def _app(name: str) -> Celery:
    return Celery(name, broker="redis://127.0.0.1:6379/11", set_as_current=False)


async def _connections(database_url: str, application_name: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        return int(count)
    finally:
        await connection.close()


@pytest.mark.postgres
def test_a_bridge_built_from_a_url_closes_its_backend_with_the_client(
    postgres_database: str,
) -> None:
    name = f"sayiir-bridge-{secrets.token_hex(4)}"
    bridge = SayiirCelery(
        _app("owned"),
        backend=f"{postgres_database}?application_name={name}",
        workflows=[FLOW],
        sweeper="off",
    )
    assert bridge.owns_backend
    try:
        assert list(bridge.client.list_instances()) == []  # opens the backend
        assert run_sync(_connections(postgres_database, name)) > 0
    finally:
        bridge.client.close()
    assert run_sync(_connections(postgres_database, name)) == 0


@pytest.mark.postgres
def test_a_backend_handed_to_the_bridge_stays_open_for_its_owner(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    name = f"sayiir-bridge-{secrets.token_hex(4)}"
    backend = PostgresBackend(f"{url}?application_name={name}", schema=schema)
    bridge = SayiirCelery(_app("handed"), backend=backend, workflows=[FLOW], sweeper="off")
    assert not bridge.owns_backend
    try:
        bridge.client.list_instances()
        bridge.client.close()
        assert run_sync(_connections(url, name)) > 0  # still the owner's to close
    finally:
        run_sync(backend.close())
    assert run_sync(_connections(url, name)) == 0


def test_the_sweeper_lease_is_not_listed_as_an_instance() -> None:
    backend = InMemoryBackend()
    bridge = SayiirCelery(_app("listing"), backend=backend, workflows=[FLOW], sweeper="off")
    assert run_sync(SweeperLease(backend, "sweeper-1", ttl=10).hold())
    other = WorkflowClient(backend)
    assert [s.instance_id for s in other.list_instances()] == [LEASE_INSTANCE]
    assert list(bridge.client.list_instances()) == []
    assert list(bridge.client.list_instances(status="pending")) == []
    asked = bridge.client.list_instances(workflow_id=LEASE_WORKFLOW)
    assert [s.instance_id for s in asked] == [LEASE_INSTANCE]
