"""PostgreSQL helpers for the tests: the throwaway database and a wire proxy.

The fixtures ``postgres_database`` (one database per run) and ``postgres_schema`` (one
schema per test) are ``sayiir_core.testing.postgres``'s, registered once for the whole
tree in ``tests/conftest.py``: request them by name, do not import them (a module that
imports them gets a database of its own). They skip when the server is unreachable, or
fail when ``SAYIIR_REQUIRE_SERVICES=1``.

``WireProxy`` sits between a backend and the server to count round trips and cut
connections.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from sayiir_core.testing.postgres import (
    postgres_database,
    postgres_schema,
    with_database,
)
from sayiir_core.testing.postgres import run_on_fresh_loop as run_sync

__all__ = [
    "WireProxy",
    "postgres_database",
    "postgres_schema",
    "run_sync",
    "with_database",
]


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
