"""A throwaway PostgreSQL database for tests: one per test run, one schema per test.

Needs asyncpg (the ``postgres`` extra). Register the fixtures once, in the top
``conftest.py`` of your tests (importing them into several conftests would make one
database per import)::

    from sayiir_core.testing.postgres import postgres_database, postgres_schema

    __all__ = ["postgres_database", "postgres_schema"]  # re-exported: pytest finds them

``postgres_database`` is the URL of a database created for the run and dropped (with
``FORCE``) at its end; ``postgres_schema`` is ``(url, schema)``, a schema name of the
test's own, dropped after it — pass it to ``PostgresBackend(url, schema=schema)``.

The server is ``SAYIIR_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``; its database is the maintenance database the test database is created
from). When it is unreachable the tests skip, or fail when ``SAYIIR_REQUIRE_SERVICES=1``
(set it on CI, where a silent skip would hide a broken service).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The PostgreSQL server tests use: ``SAYIIR_TEST_POSTGRES_URL`` or the default."""
    return os.environ.get("SAYIIR_TEST_POSTGRES_URL", DEFAULT_SERVER_URL)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def service_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it where services are required (``SAYIIR_REQUIRE_SERVICES=1``)."""
    if os.environ.get("SAYIIR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (SAYIIR_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{reason}; set SAYIIR_REQUIRE_SERVICES=1 to make this a failure")


def run_on_fresh_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop in a thread of its own.

    Works from sync code whether or not the calling thread runs a loop (a sync fixture's
    teardown may), and touches no loop the code under test uses.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="sayiir-test-postgres")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def execute(url: str, *statements: str) -> None:
    """Run ``statements`` on a connection of their own."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _unreachable_reason(url: str) -> str | None:
    try:
        await execute(url, "SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parts = urlsplit(url)
        return (
            f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432} "
            f"({type(exc).__name__}: {exc})"
        )
    return None


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a database created for this test run and dropped at its end."""
    server = server_url()
    reason = run_on_fresh_loop(_unreachable_reason(server))
    if reason is not None:
        service_unavailable(reason)
    name = f"sayiir_test_{secrets.token_hex(4)}"
    run_on_fresh_loop(execute(server, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server, name)
    finally:
        run_on_fresh_loop(execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_schema(postgres_database: str) -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a schema name of this test's own, dropped after it."""
    schema = f"t_{secrets.token_hex(6)}"
    try:
        yield postgres_database, schema
    finally:
        run_on_fresh_loop(execute(postgres_database, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


__all__ = [
    "DEFAULT_SERVER_URL",
    "execute",
    "postgres_database",
    "postgres_schema",
    "run_on_fresh_loop",
    "server_url",
    "service_unavailable",
    "with_database",
]
