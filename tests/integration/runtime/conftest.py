"""Backends for the runtime tests: every durable test runs on memory, SQLite and PostgreSQL.

PostgreSQL runs use a schema of their own in the run's test database (the
``make_postgres_backend`` fixture of ``tests/conftest.py``). Its connection pool belongs
to the event loop that opened it, so PostgreSQL joins the tests driven through the sync
API (one loop thread per process); async tests run on memory and SQLite, and the async
contract suite covers the PostgreSQL backend itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir_core import Backend, InMemoryBackend, SqliteBackend, Worker, WorkerHandle, Workflow
from sayiir_core.runtime.loop_thread import run_sync

BackendFactory = Callable[[], Backend]
HandleStarter = Callable[..., WorkerHandle]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runtime_dir = Path(__file__).parent
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        function = getattr(item, "function", None)
        on_postgres = "[postgres" in item.nodeid or "-postgres" in item.nodeid
        is_async = function is not None and inspect.iscoroutinefunction(function)
        in_here = runtime_dir in Path(str(item.fspath)).parents
        (drop if on_postgres and is_async and in_here else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def open_backend(
    backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[BackendFactory]:
    """Each call returns a new backend object on the same storage.

    For SQLite and PostgreSQL that is a new connection to the same file or schema, as a
    restarted process would have. ``InMemoryBackend`` has no storage beyond the object,
    so every call returns the same one.
    """
    opened: list[Backend] = []
    memory = InMemoryBackend()
    make_postgres: Callable[[], Backend] | None = (
        request.getfixturevalue("make_postgres_backend") if backend_kind == "postgres" else None
    )

    def factory() -> Backend:
        if backend_kind == "memory":
            return memory
        backend: Backend
        if make_postgres is not None:
            backend = make_postgres()
        else:
            backend = SqliteBackend(tmp_path / "sayiir.db")
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        run_sync(backend.close())


@pytest.fixture
def durable_backend(open_backend: BackendFactory) -> Backend:
    """A durable backend: in memory, SQLite in ``tmp_path`` or a PostgreSQL schema."""
    return open_backend()


@pytest.fixture
def start_worker(durable_backend: Backend) -> Iterator[HandleStarter]:
    """Start ``Worker(worker_id, durable_backend, **options)`` threads; stopped afterwards.

    Options default to a fast poll (0.02 s), ``claim_ttl=300`` and ``concurrency=8``.
    """
    handles: list[WorkerHandle] = []

    def start(worker_id: str, workflows: list[Workflow], **options: Any) -> WorkerHandle:
        settings = {"poll_interval": 0.02, "claim_ttl": 300.0, "concurrency": 8, **options}
        handle = Worker(worker_id, durable_backend, **settings).start(workflows)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.shutdown()
    for handle in handles:
        handle.join(10)
