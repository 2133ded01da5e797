"""The backend contract (``sayiir_core.testing``) on each of Sayiir's own backends.

Each class only says how to make its backend; the tests are the suite's, the same a
third-party backend runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sayiir_core import (
    ConflictPolicy,
    InMemoryBackend,
    PayloadTooLargeError,
    SqliteBackend,
    Status,
)
from sayiir_core.backends import NewInstance
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.testing import (
    BackendContract,
    BackendFactory,
    BackendStatsContract,
    BackendSuite,
    FinishWatchContract,
)


class TestInMemoryBackend(BackendSuite):
    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        backend = InMemoryBackend()  # its storage is the object: every call shares it
        return lambda: backend


class TestSqliteBackend(BackendContract, FinishWatchContract, BackendStatsContract):
    """No step queue on SQLite (its workers run every step of an instance themselves), so
    not ``BackendSuite``, whose queue tests would skip here."""

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> BackendFactory:
        return lambda: SqliteBackend(tmp_path / "sayiir.db")


@pytest.mark.postgres
class TestPostgresBackend(BackendSuite):
    @pytest.fixture
    def make_backend(self, make_postgres_backend: Callable[..., Any]) -> BackendFactory:
        return make_postgres_backend

    # PostgreSQL's own, beyond the contract: the other backends have no payload limit.

    async def test_an_oversized_step_input_is_refused_before_anything_is_written(
        self, make_postgres_backend: Callable[..., Any]
    ) -> None:
        def ticket(step_key: str, input: bytes) -> StepTicket:
            return StepTicket(StepRef("i-1", step_key, 1), "wf", "hash-1", input, 3, 1_000.0)

        async with make_postgres_backend(max_payload_bytes=100) as backend:
            new = NewInstance("i-1", "wf", "hash-1", b"1", Status.PENDING, 1_000.0)
            await backend.create(new, ConflictPolicy.FAIL)
            await backend.claim("i-1", "w1", 30.0, 1_000.0)
            with pytest.raises(PayloadTooLargeError, match="input of step 'b'"):
                await backend.publish_steps([ticket("c", b"7"), ticket("b", b"x" * 101)])
            assert await backend.claim_steps("w2", {"wf": "hash-1"}, 30.0, 1_000.0, 10) == []
