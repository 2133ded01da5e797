"""The ``backend`` fixture: every contract test runs once per backend kind.

To add a backend, add its kind to ``BACKEND_KINDS`` (with its marker, e.g.
``pytest.param("postgres", marks=pytest.mark.postgres)``) and a branch to
``make_backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sayiir_core.backends import Backend, InMemoryBackend, SqliteBackend

BACKEND_KINDS = ["memory", "sqlite"]


def make_backend(kind: str, tmp_path: Path) -> Backend:
    """A fresh, unopened backend of ``kind`` whose data lives under ``tmp_path``."""
    if kind == "memory":
        return InMemoryBackend()
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "sayiir.db")
    raise ValueError(f"unknown backend kind {kind!r}")


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def backend(backend_kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = make_backend(backend_kind, tmp_path)
    await opened.open()
    yield opened
    await opened.close()
