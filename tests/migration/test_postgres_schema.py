"""schema.sql and the numbered migrations must describe the same PostgreSQL schema,
and migrating must be safe to repeat and to race."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.backends.postgres.schema import check_schema_name, migrations, schema_sql
from sayiir_core.errors import BackendError

pytestmark = pytest.mark.postgres
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def conn(postgres_database: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(postgres_database)
    yield connection
    await connection.close()


async def describe(conn: Any, schema: str) -> dict[str, Any]:
    """Tables, columns, compression, indexes, constraints and table options of ``schema``."""

    def plain(rows: list[Any]) -> list[tuple[Any, ...]]:
        return [tuple(str(v).replace(schema, "<schema>") for v in row) for row in rows]

    return {
        "tables": plain(
            await conn.fetch(
                """
                SELECT c.relname, c.relkind, coalesce(c.reloptions, '{}')
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 ORDER BY c.relname
                """,
                schema,
            )
        ),
        "columns": plain(
            await conn.fetch(
                """
                SELECT table_name, ordinal_position, column_name, data_type, is_nullable,
                       column_default, is_identity, identity_generation
                FROM information_schema.columns WHERE table_schema = $1
                ORDER BY table_name, ordinal_position
                """,
                schema,
            )
        ),
        "compression": plain(
            await conn.fetch(
                """
                SELECT c.relname, a.attname, a.attcompression::text, a.attstorage::text
                FROM pg_attribute a
                JOIN pg_class c ON c.oid = a.attrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0
                ORDER BY c.relname, a.attnum
                """,
                schema,
            )
        ),
        "indexes": plain(
            await conn.fetch(
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = $1 ORDER BY indexname",
                schema,
            )
        ),
        "constraints": plain(
            await conn.fetch(
                """
                SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid)
                FROM pg_constraint co
                JOIN pg_class cl ON cl.oid = co.conrelid
                JOIN pg_namespace n ON n.oid = co.connamespace
                WHERE n.nspname = $1 ORDER BY co.conname
                """,
                schema,
            )
        ),
    }


async def opened(url: str, schema: str) -> PostgresBackend:
    backend = PostgresBackend(url, schema=schema, max_size=2)
    await backend.open()
    return backend


async def applied(conn: Any, schema: str) -> list[int]:
    rows = await conn.fetch(f'SELECT version FROM "{schema}".sayiir_migrations ORDER BY version')
    return [row[0] for row in rows]


async def test_schema_sql_equals_all_migrations_applied(
    postgres_schema: tuple[str, str], conn: Any
) -> None:
    url, migrated = postgres_schema
    by_hand = f"{migrated}_sql"
    await (await opened(url, migrated)).close()
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{by_hand}"; SET LOCAL search_path TO "{by_hand}"')
            await conn.execute(schema_sql())

        expected = await describe(conn, by_hand)
        actual = await describe(conn, migrated)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{by_hand}" CASCADE')

    assert len(expected["tables"]) > 5
    assert actual == expected


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = migrations()

    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"


async def test_opening_twice_migrates_once(postgres_schema: tuple[str, str], conn: Any) -> None:
    url, schema = postgres_schema
    await (await opened(url, schema)).close()
    await (await opened(url, schema)).close()

    assert await applied(conn, schema) == [m.version for m in migrations()]


async def test_concurrent_first_opens_migrate_once(
    postgres_schema: tuple[str, str], conn: Any
) -> None:
    url, schema = postgres_schema

    # Each backend has its own pool, so these are separate sessions racing on the server.
    backends = await asyncio.gather(*(opened(url, schema) for _ in range(8)))
    try:
        assert await applied(conn, schema) == [m.version for m in migrations()]
        # And every one of them works on the schema.
        for backend in backends:
            assert await backend.get_record("nope") is None
    finally:
        await asyncio.gather(*(backend.close() for backend in backends))


_CHILD = """
import asyncio, sys
from sayiir_core.backends.postgres import PostgresBackend

async def main():
    backend = PostgresBackend(sys.argv[1], schema=sys.argv[2], max_size=1)
    await backend.open()
    await backend.close()
    print("ok")

asyncio.run(main())
"""


async def test_concurrent_processes_migrate_once(
    postgres_schema: tuple[str, str], conn: Any
) -> None:
    url, schema = postgres_schema
    root = str(REPO_ROOT)
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            url,
            schema,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(child.communicate() for child in children))

    assert [(child.returncode, out) for child, (out, _) in zip(children, outputs, strict=True)] == [
        (0, b"ok\n")
    ] * 4, [err.decode() for _, err in outputs]
    assert await applied(conn, schema) == [m.version for m in migrations()]


async def test_a_newer_schema_is_refused(postgres_schema: tuple[str, str], conn: Any) -> None:
    url, schema = postgres_schema
    await (await opened(url, schema)).close()
    await conn.execute(f"INSERT INTO \"{schema}\".sayiir_migrations VALUES (999, 'future', 0)")

    with pytest.raises(BackendError, match="upgrade sayiir_core"):
        await opened(url, schema)


async def test_a_failed_migration_leaves_nothing(
    postgres_schema: tuple[str, str], conn: Any
) -> None:
    url, schema = postgres_schema
    # A table in the way makes 0001 fail half way through.
    await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".sayiir_history (x int)')

    with pytest.raises(BackendError, match="migrating schema"):
        await opened(url, schema)

    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
    )
    assert [row[0] for row in tables] == ["sayiir_history"]


@pytest.mark.parametrize(
    "name", ["", "Upper", "1abc", 'x"; DROP TABLE y; --', "a-b", "pg_temp", "x" * 51]
)
def test_unsafe_schema_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        check_schema_name(name)
    with pytest.raises(ValueError, match="schema name"):
        PostgresBackend("postgresql://localhost/db", schema=name)
