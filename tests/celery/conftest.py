"""Fixtures of the bridge tests: an isolated Redis key prefix, real workers, a client.

Each test gets its own PostgreSQL schema and its own Redis key prefix (on database 11);
every key under that prefix is deleted after the test. Without Redis the tests skip,
or fail when ``SAYIIR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# The fleet helper and the app module sit beside this file (``tests/`` is on the path,
# but ``tests/celery`` is not a package: its name would shadow Celery's).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery_fleet import HERE, Fleet

from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.testing.postgres import service_unavailable

REDIS_DB = 11


def _redis(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2)


@pytest.fixture
def broker() -> Iterator[tuple[str, str]]:
    """``(broker_url, key_prefix)``: Redis with a key prefix of this test's own."""
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    client = _redis(url)
    try:
        client.ping()
    except Exception as error:
        service_unavailable(f"Redis is not reachable at 127.0.0.1:6379 ({error})")
    prefix = f"sayiir-test-{secrets.token_hex(4)}:"
    try:
        yield url, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def fleet(
    tmp_path: Path, broker: tuple[str, str], postgres_schema: tuple[str, str]
) -> Iterator[Fleet]:
    url, schema = postgres_schema
    fleet = Fleet(tmp_path, broker=broker[0], prefix=broker[1], url=url, schema=schema)
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def app_module(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``bridge_app`` loaded in the test process with the fleet's settings (the client side)."""
    with loaded_app(fleet, monkeypatch) as module:
        yield module


@contextlib.contextmanager
def loaded_app(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Iterator[ModuleType]:
    """A fresh copy of ``bridge_app`` with the fleet's settings (and ``extra``)."""
    for key, value in fleet.env(**extra).items():
        if key.startswith("BRIDGE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("BRIDGE_WORKER", "client")
    name = f"bridge_app_{secrets.token_hex(4)}"
    spec = importlib.util.spec_from_file_location(name, HERE / "bridge_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        run_sync(module.BACKEND.close())
        module.app.close()
        del sys.modules[name]
