"""PostgreSQL for the tests: one throwaway database per run, one schema per test.

Import the fixtures into a conftest or test module (pytest runs with
``--import-mode=importlib``, so put ``tests/`` on ``sys.path`` first, as
``tests/integration/conftest.py`` does)::

    from postgres_service import postgres_database, postgres_schema  # noqa: F401

The server is ``SAYIIR_TEST_POSTGRES_URL`` (default: user ``postgres`` on
127.0.0.1:5432; its database names the maintenance database the test database is
created from). Unreachable: the tests skip, or fail when ``SAYIIR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

BASE_URL = os.environ.get(
    "SAYIIR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh loop in a thread: works inside or outside a loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where services are required (CI)."""
    if os.environ.get("SAYIIR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (SAYIIR_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{reason}; set SAYIIR_REQUIRE_SERVICES=1 to make this a failure")


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _probe(url: str) -> str | None:
    try:
        await execute(url, "SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parts = urlsplit(url)
        return (
            f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432} "
            f"({type(exc).__name__}: {exc})"
        )
    return None


@dataclass
class _Shared:
    url: str
    users: int = 0


_shared: _Shared | None = None
_lock = threading.Lock()


def _acquire_database() -> str:
    """The run's database, created by the first user; refcounted across conftests."""
    global _shared
    with _lock:
        if _shared is None:
            reason = run_sync(_probe(BASE_URL))
            if reason is not None:
                unavailable(reason)
            name = f"sayiir_test_{secrets.token_hex(4)}"
            run_sync(execute(BASE_URL, f'CREATE DATABASE "{name}"'))
            _shared = _Shared(with_database(BASE_URL, name))
        _shared.users += 1
        return _shared.url


def _release_database() -> None:
    global _shared
    with _lock:
        assert _shared is not None
        _shared.users -= 1
        if _shared.users == 0:
            name = urlsplit(_shared.url).path.lstrip("/")
            _shared = None
            run_sync(execute(BASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a database created for this test run and dropped at its end."""
    url = _acquire_database()
    try:
        yield url
    finally:
        _release_database()


@pytest.fixture
def postgres_schema(postgres_database: str) -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a schema name of this test's own, dropped after it."""
    schema = f"t_{secrets.token_hex(6)}"
    try:
        yield postgres_database, schema
    finally:
        run_sync(execute(postgres_database, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


class WireProxy:
    """A TCP proxy in front of PostgreSQL that counts round trips and can cut connections.

    Every client ``Sync`` (extended protocol) or ``Query`` (simple protocol) message
    ends one round trip: the client then waits for ReadyForQuery. Use an URL with
    ``sslmode=disable`` so the stream is readable.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.refusing = False  # while True, new connections are closed at once (an outage)
        self.round_trips = 0
        self.queries: list[str] = []
        self.port = 0

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        netloc = parts.netloc.rpartition("@")
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(
                netloc=f"{netloc[0]}@{host}" if netloc[1] else host,
                query="sslmode=disable",
            )
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every proxied connection at once, as a network failure would."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        await asyncio.gather(
            self._client_to_server(client_r, server_w),
            self._pipe(server_r, client_w),
            return_exceptions=True,
        )
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Startup packets have no type byte: length, then a protocol code.
        while True:
            header = await reader.readexactly(8)
            body = await reader.readexactly(int.from_bytes(header[:4], "big") - 8)
            writer.write(header + body)
            if int.from_bytes(header[4:], "big") != 80877103:  # not an SSLRequest
                break
        while True:
            kind = await reader.readexactly(1)
            length = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(length, "big") - 4)
            if kind in (b"S", b"Q"):
                self.round_trips += 1
            if kind == b"Q":
                self.queries.append(body.rstrip(b"\0").decode())
            writer.write(kind + length + body)
            await writer.drain()
