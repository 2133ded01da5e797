"""Sayiir 1.0's ``PostgresBackend`` keywords, accepted and honoured.

``max_connections``, ``min_connections``, ``acquire_timeout_secs``, ``idle_timeout_secs``,
``max_lifetime_secs``, ``statement_timeout_secs`` and
``idle_in_transaction_session_timeout_secs``: each is watched on the server
(``pg_stat_activity``, ``SHOW``) or through what it makes happen.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from sayiir_core.backends import ConflictPolicy, NewInstance
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.backends.postgres.options import PoolOptions
from sayiir_core.errors import BackendError
from sayiir_core.status import Status

NOW = 1_000.0
URL = "postgresql://app@db.example/flows"

# -- the signature and the defaults (no server needed) ---------------------------------


def test_every_keyword_of_sayiir_1_0_is_accepted_in_its_order() -> None:
    sayiir = pytest.importorskip("sayiir")
    theirs = inspect.signature(sayiir.PostgresBackend).parameters
    ours = inspect.signature(PostgresBackend).parameters

    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        assert ours[name].default == parameter.default, name


def test_the_defaults_are_sayiir_1_0s() -> None:
    options = PostgresBackend(URL)._session.options

    assert options == PoolOptions(
        max_connections=20,
        min_connections=2,
        acquire_timeout=30.0,
        idle_timeout=600.0,
        max_lifetime=1800.0,
        statement_timeout=None,
        idle_in_transaction_session_timeout=None,
    )


def test_the_older_size_keywords_still_work() -> None:
    options = PostgresBackend(URL, min_size=0, max_size=3)._session.options
    assert (options.min_connections, options.max_connections) == (0, 3)
    # A pool smaller than the default minimum keeps its minimum within it.
    assert PostgresBackend(URL, max_connections=1)._session.options.min_connections == 1


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"max_connections": 0}, "max_connections must be an integer >= 1"),
        ({"min_connections": -1}, "min_connections must be an integer >= 0"),
        ({"min_connections": 5, "max_connections": 4}, "must not exceed max_connections"),
        ({"max_connections": 4, "max_size": 5}, "disagree"),
        ({"acquire_timeout_secs": 0}, "acquire_timeout_secs must be a positive number"),
        ({"idle_timeout_secs": -1.0}, "idle_timeout_secs must be a positive number"),
        ({"max_lifetime_secs": float("inf")}, "max_lifetime_secs must be a positive number"),
        ({"statement_timeout_secs": "5"}, "statement_timeout_secs must be a positive number"),
        (
            {"idle_in_transaction_session_timeout_secs": 0.0},
            "idle_in_transaction_session_timeout_secs must be a positive number",
        ),
    ],
)
def test_bad_values_are_a_value_error_naming_the_keyword(
    keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PostgresBackend(URL, **keywords)


def test_timeouts_go_to_the_server_in_milliseconds_never_zero() -> None:
    options = PoolOptions(statement_timeout=2.5, idle_in_transaction_session_timeout=0.0001)
    assert options.server_settings() == {
        "statement_timeout": "2500",
        # 0 would mean "no timeout" to PostgreSQL: the opposite of a tiny one.
        "idle_in_transaction_session_timeout": "1",
    }


# -- honoured on a real server ----------------------------------------------------------

Opener = Callable[..., Awaitable[PostgresBackend]]


@pytest.fixture
def app_name() -> str:
    """An application_name of this test's own, to find its connections on the server."""
    return f"sayiir_pool_{secrets.token_hex(4)}"


@pytest.fixture
async def opener(postgres_schema: tuple[str, str], app_name: str) -> AsyncIterator[Opener]:
    url, schema = postgres_schema
    opened: list[PostgresBackend] = []

    async def open_backend(**options: Any) -> PostgresBackend:
        named = f"{url}{'&' if '?' in url else '?'}application_name={app_name}"
        backend = PostgresBackend(named, schema=schema, **options)
        opened.append(backend)
        await backend.open()
        return backend

    yield open_backend
    for backend in opened:
        await backend.close()


@pytest.fixture
async def server(postgres_schema: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to watch and to hold locks."""
    conn = await asyncpg.connect(postgres_schema[0])
    yield conn
    await conn.close()


async def _pids(server: asyncpg.Connection, app_name: str) -> set[int]:
    rows = await server.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app_name
    )
    return {row[0] for row in rows}


async def _until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def _created(backend: PostgresBackend, instance_id: str = "i-1") -> None:
    new = NewInstance(instance_id, "wf", "hash-1", b"{}", Status.PENDING, NOW)
    await backend.create(new, ConflictPolicy.FAIL)


class _RowLock:
    """The instance row's lock, held in a session of its own so claims of it wait.

    Not on the watching connection: inside a transaction, pg_stat_activity answers from
    the snapshot it took first.
    """

    def __init__(self, holder: asyncpg.Connection, transaction: Any) -> None:
        self._holder, self._transaction = holder, transaction

    async def rollback(self) -> None:
        await self._transaction.rollback()
        await self._holder.close()


async def _lock_row(postgres_schema: tuple[str, str]) -> _RowLock:
    url, schema = postgres_schema
    holder = await asyncpg.connect(url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute(
        f"SELECT 1 FROM \"{schema}\".sayiir_instances WHERE instance_id = 'i-1' FOR UPDATE"
    )
    return _RowLock(holder, transaction)


async def _waiting_on_locks(server: asyncpg.Connection, app_name: str) -> int:
    count: int = await server.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = $1 AND wait_event_type = 'Lock'",
        app_name,
    )
    return count


@pytest.mark.postgres
async def test_statement_and_idle_in_transaction_timeouts_are_set_on_pooled_connections(
    opener: Opener,
) -> None:
    backend = await opener(statement_timeout_secs=1.5, idle_in_transaction_session_timeout_secs=4)
    plain = await opener()

    for pooled, expected in ((backend, ("1500ms", "4s")), (plain, ("0", "0"))):
        session = pooled._session
        async with session.connection(session.pool(), "test") as conn:
            shown = (
                await conn.fetchval("SHOW statement_timeout"),
                await conn.fetchval("SHOW idle_in_transaction_session_timeout"),
            )
        assert shown == expected


@pytest.mark.postgres
async def test_a_statement_over_statement_timeout_is_cancelled_by_the_server(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    backend = await opener(statement_timeout_secs=0.2)
    await _created(backend)
    transaction = await _lock_row(postgres_schema)
    try:
        with pytest.raises(BackendError, match="statement timeout"):
            await backend.claim("i-1", "w1", 30.0, NOW)
    finally:
        await transaction.rollback()
    assert (await backend.claim("i-1", "w1", 30.0, NOW)).token == 1


@pytest.mark.postgres
async def test_a_transaction_left_idle_is_ended_by_the_server(opener: Opener) -> None:
    backend = await opener(idle_in_transaction_session_timeout_secs=0.2)
    session = backend._session

    async with session.connection(session.pool(), "test") as conn:
        transaction = conn.transaction()
        await transaction.start()
        await asyncio.sleep(0.6)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await conn.fetchval("SELECT 1")

    assert await backend.get_record("i-1") is None  # the pool replaced that connection


@pytest.mark.postgres
async def test_min_connections_are_made_at_open(
    opener: Opener, server: asyncpg.Connection, app_name: str
) -> None:
    await opener(min_connections=3, max_connections=5)

    assert len(await _pids(server, app_name)) == 3


@pytest.mark.postgres
async def test_max_connections_caps_the_pool_under_load(
    opener: Opener, server: asyncpg.Connection, app_name: str, postgres_schema: tuple[str, str]
) -> None:
    backend = await opener(max_connections=2, min_connections=0)
    await _created(backend)
    transaction = await _lock_row(postgres_schema)
    try:
        claims = [asyncio.create_task(backend.claim("i-1", f"w{n}", 30.0, NOW)) for n in range(5)]
        await _until(lambda: _count_is(_waiting_on_locks(server, app_name), 2))
        await asyncio.sleep(0.2)  # the three others wait for a connection, not the server

        assert len(await _pids(server, app_name)) == 2
    finally:
        await transaction.rollback()
    tokens = sorted(claim.token for claim in await asyncio.gather(*claims))
    assert tokens == [1, 2, 3, 4, 5]


async def _count_is(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


@pytest.mark.postgres
async def test_waiting_longer_than_acquire_timeout_is_a_backend_error(
    opener: Opener, server: asyncpg.Connection, app_name: str, postgres_schema: tuple[str, str]
) -> None:
    backend = await opener(max_connections=1, acquire_timeout_secs=0.2)
    await _created(backend)
    transaction = await _lock_row(postgres_schema)
    try:
        holding = asyncio.create_task(backend.claim("i-1", "w1", 30.0, NOW))
        await _until(lambda: _count_is(_waiting_on_locks(server, app_name), 1))

        with pytest.raises(BackendError, match=r"acquire_timeout_secs=0\.2 .*max_connections=1"):
            await backend.get_record("i-1")
    finally:
        await transaction.rollback()
    assert (await holding).token == 1


@pytest.mark.postgres
async def test_connections_idle_past_idle_timeout_are_closed(
    opener: Opener, server: asyncpg.Connection, app_name: str
) -> None:
    backend = await opener(min_connections=0, idle_timeout_secs=0.3)
    await backend.get_record("i-1")

    await _until(lambda: _count_is(_len(_pids(server, app_name)), 0))
    assert await backend.get_record("i-1") is None  # and new ones are made on demand


async def _len(pids: Awaitable[set[int]]) -> int:
    return len(await pids)


@pytest.mark.postgres
@pytest.mark.parametrize("max_lifetime_secs", [0.4, None])
async def test_a_connection_past_max_lifetime_is_replaced_before_its_next_use(
    opener: Opener, server: asyncpg.Connection, app_name: str, max_lifetime_secs: float | None
) -> None:
    backend = await opener(max_connections=1, max_lifetime_secs=max_lifetime_secs)
    await backend.get_record("i-1")
    (first,) = await _pids(server, app_name)

    await asyncio.sleep(0.6)
    await backend.get_record("i-1")
    (second,) = await _pids(server, app_name)

    # The default lifetime (30 min) keeps the connection; 0.4 s replaces it.
    assert (second != first) is (max_lifetime_secs is not None)
