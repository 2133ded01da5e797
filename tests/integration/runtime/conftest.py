"""Backends for the runtime tests: every durable test runs on memory and on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sayiir_core import Backend, InMemoryBackend, SqliteBackend
from sayiir_core.runtime.loop_thread import run_sync

BackendFactory = Callable[[], Backend]


@pytest.fixture(params=["memory", "sqlite"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def open_backend(backend_kind: str, tmp_path: Path) -> Iterator[BackendFactory]:
    """Each call returns a new backend object on the same storage.

    For SQLite that is a new connection to the same file in ``tmp_path``, as a
    restarted process would have. ``InMemoryBackend`` has no storage beyond the
    object, so every call returns the same one.
    """
    opened: list[Backend] = []
    memory = InMemoryBackend()

    def factory() -> Backend:
        if backend_kind == "memory":
            return memory
        backend = SqliteBackend(tmp_path / "sayiir.db")
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        run_sync(backend.close())


@pytest.fixture
def durable_backend(open_backend: BackendFactory) -> Backend:
    """A durable backend: ``InMemoryBackend`` or ``SqliteBackend`` in ``tmp_path``."""
    return open_backend()
