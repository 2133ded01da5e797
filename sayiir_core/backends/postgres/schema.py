"""The PostgreSQL schema as data: ``sql/postgres/schema.sql`` and numbered migrations.

The SQL files name tables without a schema; ``migrate`` runs them with ``search_path``
set to the configured schema, so one file serves every schema name and nothing is
spliced into SQL text but a validated, quoted identifier.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

import asyncpg

from sayiir_core.errors import BackendError

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Conn, Session

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Unquoted-identifier rules, lower case only: the name then means the same quoted or
# not, in psql as in our SQL. 50 characters leaves room for the NOTIFY channel
# "sayiir_work_<schema>" within PostgreSQL's 63-byte identifier limit.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
# First key of the two-key advisory lock; the second is hashtext(schema name).
_LOCK_CLASS = 0x5A11


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a safe schema name, else ``ValueError``."""
    if not _SCHEMA_NAME.match(schema) or schema.startswith("pg_"):
        raise ValueError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-50 lower-case letters, "
            "digits and underscores, starting with a letter or underscore (not pg_)"
        )
    return schema


def quote(schema: str) -> str:
    """``schema`` as a quoted identifier (it has been checked: no quotes inside)."""
    return f'"{check_schema_name(schema)}"'


def _sql_dir() -> Traversable:
    return files("sayiir_core.backends").joinpath("sql").joinpath("postgres")


def schema_sql() -> str:
    """The whole current schema (what every migration applied in order adds up to)."""
    return _sql_dir().joinpath("schema.sql").read_text(encoding="utf-8")


def migrations() -> list[Migration]:
    """Every shipped migration, ordered by version; versions must run 1, 2, 3, ..."""
    found = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is not None:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise BackendError(f"sayiir PostgreSQL migrations are mis-numbered: {versions}")
    return found


async def migrate(conn: Conn, schema: str, now: float) -> list[int]:
    """Create ``schema`` if needed and apply pending migrations; returns the versions.

    Workers usually open an up-to-date schema, so a lock-free look comes first. Otherwise
    everything runs in one transaction holding a transaction-level advisory lock keyed on
    the schema name: concurrent first opens queue on the lock, and each re-reads the
    applied versions after getting it, so only the first one migrates. DDL is
    transactional in PostgreSQL, so a failed migration leaves nothing half-built.
    The caller turns ``asyncpg`` errors into ``BackendError``.
    """
    known = migrations()
    newest = known[-1].version if known else 0
    if await _applied_versions(conn, schema) == set(range(1, newest + 1)):
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, schema)
        applied = await _applied_versions(conn, schema)
        if applied and max(applied) > newest:
            raise BackendError(
                f"PostgreSQL schema {schema!r} is at version {max(applied)} but this "
                f"sayiir_core only knows up to {newest}; upgrade sayiir_core"
            )
        pending = [m for m in known if m.version not in applied]
        if not pending:
            return []
        # Checked first because CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege
        # on the database even when the schema exists (e.g. made by a DBA).
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {quote(schema)}")
        # pg_catalog stays implicitly first, so built-in names cannot be shadowed.
        await conn.execute(f"SET LOCAL search_path TO {quote(schema)}")
        for migration in pending:
            # No parameters: the simple query protocol runs the whole multi-statement file.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO sayiir_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                now,
            )
    return [migration.version for migration in pending]


async def migrate_pool(pool: asyncpg.Pool, schema: str, session: Session) -> None:
    """``migrate`` on a connection from ``pool``, with errors as ``BackendError``."""
    try:
        async with session.connection(pool, "open") as conn:
            await migrate(conn, schema, time.time())
    except OSError as exc:  # with min_connections=0 the first connection is made here
        raise session.connect_error(exc) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        address = session.address
        raise BackendError(
            f"PostgreSQL {address}: migrating schema {schema!r} failed: {address.scrub(str(exc))}"
        ) from exc


async def _applied_versions(conn: Conn, schema: str) -> set[int]:
    # A plain query on pg_class, not to_regclass(): the latter reads the session's
    # catalog cache, which waiting on an advisory lock does not refresh, so it could
    # miss the table a concurrent opener just committed.
    exists = await conn.fetchval(
        """
        SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = 'sayiir_migrations'
        """,
        schema,
    )
    if not exists:
        return set()
    rows = await conn.fetch(f"SELECT version FROM {quote(schema)}.sayiir_migrations")
    return {row[0] for row in rows}
