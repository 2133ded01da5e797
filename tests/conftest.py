"""Fixtures for every test directory: PostgreSQL, registered once for the whole run.

``postgres_database`` and ``postgres_schema`` come from ``sayiir_core.testing.postgres``
(one database per run, one schema per test, skipped when the server is unreachable
unless ``SAYIIR_REQUIRE_SERVICES=1``). ``make_postgres_backend`` is the one place the
tests build a ``PostgresBackend`` on a test's schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from sayiir_core.testing.postgres import postgres_database, postgres_schema

if TYPE_CHECKING:
    from sayiir_core import PostgresBackend

__all__ = ["postgres_database", "postgres_schema"]


@pytest.fixture
def make_postgres_backend(
    postgres_schema: tuple[str, str],
) -> Callable[..., PostgresBackend]:
    """Each call: a new, unopened ``PostgresBackend`` on this test's own schema.

    A small pool (4) by default so the many backends of a run stay within the server's
    connection limit; keyword options override it or add others.
    """
    from sayiir_core import PostgresBackend

    url, schema = postgres_schema

    def make(**options: Any) -> PostgresBackend:
        return PostgresBackend(url, schema=schema, **{"max_size": 4, **options})

    return make
