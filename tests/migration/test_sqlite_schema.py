"""schema.sql and the numbered migrations must describe the same SQLite schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sayiir_core.backends import SqliteBackend
from sayiir_core.backends.sqlite.schema import migrations, schema_sql, statements
from sayiir_core.errors import BackendError


def normalise(sql: str | None) -> str | None:
    """SQL text without comments, case or layout, so only its meaning is compared."""
    if sql is None:
        return None
    without_comments = re.sub(r"--[^\n]*", " ", sql)
    spaced = re.sub(r"\s+", " ", without_comments).strip().lower()
    return re.sub(r"\s*([(),])\s*", r"\1", spaced)


def describe(conn: sqlite3.Connection) -> dict[str, Any]:
    """sqlite_master normalised, plus what the pragmas say about every table."""
    master = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    description: dict[str, Any] = {
        "master": [(kind, name, table, normalise(sql)) for kind, name, table, sql in master]
    }
    for kind, name, _, _ in master:
        if kind != "table":
            continue
        indexes = conn.execute(f"PRAGMA index_list('{name}')").fetchall()
        description[name] = {
            "columns": conn.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
            "foreign_keys": conn.execute(f"PRAGMA foreign_key_list('{name}')").fetchall(),
            "indexes": sorted(
                (row[1:], conn.execute(f"PRAGMA index_xinfo('{row[1]}')").fetchall())
                for row in indexes
            ),
        }
    return description


async def test_schema_sql_equals_all_migrations_applied(tmp_path: Path) -> None:
    from_schema = sqlite3.connect(tmp_path / "schema.db")
    from_schema.executescript(schema_sql())
    backend = SqliteBackend(tmp_path / "migrated.db")
    await backend.open()
    await backend.close()
    migrated = sqlite3.connect(tmp_path / "migrated.db")

    try:
        expected, actual = describe(from_schema), describe(migrated)
    finally:
        from_schema.close()
        migrated.close()

    assert [row[:3] for row in actual["master"]] == [row[:3] for row in expected["master"]]
    assert actual == expected


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = migrations()

    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
    assert all(statements(m.sql) for m in found)


def test_statements_split_like_sqlite_does() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    -- trailing comment
    """

    parts = statements(script)

    assert len(parts) == 2
    assert parts[1].startswith("CREATE TRIGGER")
    assert parts[1].endswith("END;")
    conn = sqlite3.connect(":memory:")
    for part in parts:
        conn.execute(part)
    conn.close()


def test_an_incomplete_statement_is_an_error() -> None:
    with pytest.raises(BackendError, match="incomplete statement"):
        statements("CREATE TABLE t (x TEXT);\nCREATE TABLE u (y")
