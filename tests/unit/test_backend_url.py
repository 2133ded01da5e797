"""``backend_from_url`` and the public surface of ``sayiir_core.backends``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sayiir_core.backends import InMemoryBackend, SqliteBackend, backend_from_url
from sayiir_core.backends.url import redact
from sayiir_core.errors import BackendError


def test_memory_url() -> None:
    assert isinstance(backend_from_url("memory://"), InMemoryBackend)
    with pytest.raises(BackendError, match="no path"):
        backend_from_url("memory://somewhere")


def test_sqlite_url_with_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    backend = backend_from_url("sqlite:///var/sayiir.db")

    assert isinstance(backend, SqliteBackend)
    assert backend.path == tmp_path / "var" / "sayiir.db"


def test_sqlite_url_with_an_absolute_path_and_options() -> None:
    backend = backend_from_url(
        "sqlite:////srv/data/my%20flows.db?synchronous=normal&busy_timeout=5"
    )

    assert isinstance(backend, SqliteBackend)
    assert backend.path == Path("/srv/data/my flows.db")
    assert "synchronous='NORMAL'" in repr(backend)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://x.db", "has a host part"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///x.db?journal=off", "unknown option 'journal'"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous must be one of"),
        ("sqlite:///x.db?busy_timeout=soon", "must be seconds"),
        ("sqlite:///x.db?busy_timeout", "malformed query"),
    ],
)
def test_bad_sqlite_urls(url: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        backend_from_url(url)


@pytest.mark.parametrize(
    "url", ["mysql://admin:hunter2@db/app", "sayiir.db", "://x", "redis+tls://u:hunter2@h"]
)
def test_unknown_or_malformed_urls_list_the_supported_ones(url: str) -> None:
    with pytest.raises(BackendError) as caught:
        backend_from_url(url)

    message = str(caught.value)
    assert "memory://" in message
    assert "sqlite:///" in message
    assert "postgresql://" in message
    assert "hunter2" not in message


def test_unknown_scheme_is_named() -> None:
    with pytest.raises(BackendError, match="'mysql'"):
        backend_from_url("mysql://db/app")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_without_its_backend_is_a_clear_error(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail, as when the module is not installed.
    monkeypatch.setitem(sys.modules, "sayiir_core.backends.postgres", None)

    with pytest.raises(BackendError, match="PostgreSQL support is not available") as caught:
        backend_from_url(f"{scheme}://app:hunter2@db:5432/flows")

    assert "hunter2" not in str(caught.value)


def test_postgres_url_builds_the_postgres_backend() -> None:
    from sayiir_core.backends.postgres import PostgresBackend

    backend = backend_from_url("postgresql://app:secret@db/flows")  # nothing connects yet

    assert isinstance(backend, PostgresBackend)
    assert "secret" not in repr(backend)


def test_postgres_backend_is_exported_lazily() -> None:
    import sayiir_core
    from sayiir_core.backends.postgres import PostgresBackend

    assert sayiir_core.PostgresBackend is PostgresBackend


def test_a_missing_driver_points_to_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_import(name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")

    monkeypatch.setattr("sayiir_core.backends.url.importlib.import_module", failing_import)

    with pytest.raises(BackendError, match=r"sayiir-py\[postgres\]"):
        backend_from_url("postgresql://db/flows")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db/flows", "postgresql://app:***@db/flows"),
        ("postgresql://app:p@ss/w0rd@db/flows", "postgresql://app:***@db/flows"),
        ("postgresql://app@db/flows", "postgresql://app@db/flows"),
        ("postgresql://db/flows?password=hunter2", "postgresql://db/flows?password=***"),
        (
            "postgresql://app:pw@db/flows?sslmode=require&sslpassword=k3y",
            "postgresql://app:***@db/flows?sslmode=require&sslpassword=***",
        ),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("not a url", "not a url"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_url_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expects a URL string"):
        backend_from_url(None)  # type: ignore[arg-type]


def test_sqlite_path_names_the_file_without_opening_it(tmp_path: Path) -> None:
    from sayiir_core.backends.url import sqlite_path

    assert sqlite_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_path("postgresql://db/flows") is None
    assert not (tmp_path / "a.db").exists()
