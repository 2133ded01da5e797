"""The ``backend`` fixture: every contract test runs once per backend kind.

To add a backend, add its kind to ``BACKEND_KINDS`` (with its marker, e.g.
``pytest.param("postgres", marks=pytest.mark.postgres)``) and a branch to
``make_backend``.

PostgreSQL runs get a database of their own for the test run and a schema per test
(see ``tests/postgres_service.py``); they skip when the server is unreachable, unless
``SAYIIR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from postgres_service import postgres_database, postgres_schema

from sayiir_core.backends import Backend, InMemoryBackend, SqliteBackend

__all__ = ["postgres_database", "postgres_schema"]

BACKEND_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def make_backend(kind: str, tmp_path: Path, *, postgres: tuple[str, str] | None = None) -> Backend:
    """A fresh, unopened backend of ``kind`` whose data lives under ``tmp_path``.

    ``postgres`` is ``(url, schema)`` for the ``postgres`` kind (the ``postgres_schema``
    fixture gives one).
    """
    if kind == "memory":
        return InMemoryBackend()
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "sayiir.db")
    if kind == "postgres":
        from sayiir_core.backends.postgres import PostgresBackend

        if postgres is None:
            raise ValueError("the postgres backend kind needs postgres=(url, schema)")
        url, schema = postgres
        return PostgresBackend(url, schema=schema, max_size=4)
    raise ValueError(f"unknown backend kind {kind!r}")


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def unopened_backend(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    # Only PostgreSQL runs ask for a database, so the others never probe the server.
    postgres = request.getfixturevalue("postgres_schema") if backend_kind == "postgres" else None
    return make_backend(backend_kind, tmp_path, postgres=postgres)


@pytest.fixture
async def backend(unopened_backend: Backend) -> AsyncIterator[Backend]:
    await unopened_backend.open()
    yield unopened_backend
    await unopened_backend.close()


@pytest.fixture
async def other_backend(
    backend_kind: str, backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    """Another backend object on ``backend``'s storage: a new connection, as another
    process would have (``InMemoryBackend`` has no storage beyond the one object)."""
    if backend_kind == "memory":
        yield backend
        return
    postgres = request.getfixturevalue("postgres_schema") if backend_kind == "postgres" else None
    other = make_backend(backend_kind, tmp_path, postgres=postgres)
    await other.open()
    yield other
    await other.close()
