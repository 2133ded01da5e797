"""Opening a SQLite file ready for use, and its schema as data.

The schema is ``backends/sql/sqlite/schema.sql`` and numbered migrations next to it:
plain ``.sql`` files shipped inside the package and read with ``importlib.resources``,
so a wheel or zip import finds them like any other module data.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from sayiir_core.backends.sqlite.locking import backend_error, retry_while_busy
from sayiir_core.backends.sqlite.statements import rollback
from sayiir_core.errors import BackendError

# RETURNING (3.35) lets commit fence, write and read the pending request in one statement.
_MIN_SQLITE = (3, 35, 0)

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


def open_database(path: Path, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """Connect to ``path`` (created with its directory if missing), in WAL, migrated.

    Safe for any number of processes opening the same new file at once: switching to
    WAL and migrating are retried while SQLite refuses them for a lock, until
    ``busy_timeout`` has passed since the start (see ``locking``). The connection
    belongs to the calling thread. Failures are ``BackendError`` naming the file.
    """
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise BackendError(
            f"SqliteBackend needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}; this "
            f"Python is linked against SQLite {sqlite3.sqlite_version}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(
            f"cannot create the directory for SQLite database {path}: {exc}"
        ) from exc
    deadline = time.monotonic() + busy_timeout
    try:
        # isolation_level=None: no implicit BEGIN; every transaction here is explicit.
        # timeout=0: SQLite never waits for a lock itself; locking.retry_while_busy
        # does, on the connection's thread. check_same_thread=False: a call may run on
        # the caller's thread (ConnectionThread), one at a time under its lock.
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise backend_error(path, "open", exc, busy_timeout) from exc
    try:
        (mode,) = retry_while_busy(
            conn,
            lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(),
            busy_timeout=busy_timeout,
            deadline=deadline,
            doing="switching the file to WAL journal mode",
        )
        if str(mode).lower() != "wal":
            raise BackendError(
                f"SQLite database {path}: cannot use WAL journal mode "
                f"(SQLite answered {mode!r}); is it on a network or read-only filesystem?"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # Checkpoints run on the connection's thread (checkpoints.py), never inside a
        # commit that may be running on an event loop's thread.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        retry_while_busy(
            conn,
            lambda: migrate(conn, time.time()),
            busy_timeout=busy_timeout,
            deadline=deadline,
            doing="migrating the schema",
        )
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise backend_error(path, "open", exc, busy_timeout) from exc
        raise
    return conn


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _sql_dir() -> Traversable:
    return files("sayiir_core.backends").joinpath("sql").joinpath("sqlite")


def schema_sql() -> str:
    """The whole current schema (what every migration applied in order adds up to)."""
    return _sql_dir().joinpath("schema.sql").read_text(encoding="utf-8")


def migrations() -> list[Migration]:
    """Every shipped migration, ordered by version; versions must run 1, 2, 3, ..."""
    found = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    # A gap or a duplicate means a broken install or a mis-numbered file; applying the
    # rest would leave a schema no released version ever had.
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise BackendError(f"sayiir SQLite migrations are mis-numbered: {versions}")
    return found


def statements(script: str) -> list[str]:
    """Split a SQL script into single statements.

    ``sqlite3.complete_statement`` knows about strings and ``BEGIN ... END`` trigger
    bodies, so this is safe where splitting on ``;`` is not. ``executescript`` is not
    used because it commits any open transaction first, and a migration must run inside
    the transaction that records it.
    """
    result: list[str] = []
    pending: list[str] = []
    for line in script.splitlines(keepends=True):
        pending.append(line)
        chunk = "".join(pending)
        if sqlite3.complete_statement(chunk):
            result.append(chunk.strip())
            pending = []
    leftover = "".join(pending)
    if any(not line.strip().startswith("--") for line in leftover.splitlines() if line.strip()):
        raise BackendError(f"SQL script ends with an incomplete statement: {leftover.strip()!r}")
    return result


def migrate(conn: sqlite3.Connection, now: float) -> list[int]:
    """Apply pending migrations in one ``BEGIN IMMEDIATE`` transaction; returns versions.

    The write lock is taken before reading what is applied, so processes opening the
    same new file at once serialise here and only the first one creates the schema.
    The caller turns ``sqlite3.Error`` into ``BackendError``.
    """
    known = migrations()
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = _applied_versions(conn)
        newest_known = known[-1].version if known else 0
        if applied and max(applied) > newest_known:
            raise BackendError(
                f"the database schema is at version {max(applied)} but this sayiir_core "
                f"only knows up to {newest_known}; upgrade sayiir_core"
            )
        done = []
        for migration in known:
            if migration.version in applied:
                continue
            for statement in statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO sayiir_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now),
            )
            done.append(migration.version)
        conn.execute("COMMIT")
    except BaseException as exc:
        rollback(conn, exc)
        raise
    return done


def _applied_versions(conn: sqlite3.Connection) -> set[int]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sayiir_migrations'"
    ).fetchone()
    if exists is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM sayiir_migrations")}
