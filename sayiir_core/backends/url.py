"""``backend_from_url``: pick and configure a backend from one string.

Handy for settings files and environment variables (``SAYIIR_DATABASE_URL``). SQLite
URLs follow SQLAlchemy: three slashes then a relative path, four for an absolute one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TypedDict, cast
from urllib.parse import parse_qsl, unquote

from sayiir_core.backends.base import Backend
from sayiir_core.backends.memory import InMemoryBackend
from sayiir_core.backends.sqlite import SqliteBackend
from sayiir_core.errors import BackendError

SUPPORTED = (
    "memory://",
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "postgresql://user:password@host:5432/dbname",
)
_SQLITE_OPTIONS = ("synchronous", "busy_timeout")


class _SqliteOptions(TypedDict, total=False):
    synchronous: str
    busy_timeout: float


def backend_from_url(url: str) -> Backend:
    """A backend (not yet opened) for ``url``.

    ``memory://``
        ``InMemoryBackend()``.
    ``sqlite:///var/sayiir.db`` / ``sqlite:////srv/sayiir.db``
        ``SqliteBackend`` on a relative / absolute path; query options
        ``?synchronous=NORMAL&busy_timeout=10`` are passed through.
    ``postgresql://...`` / ``postgres://...``
        ``PostgresBackend(url)``; needs the ``postgres`` extra.

    Raises ``BackendError`` for anything else; messages never show a password.

    Example::

        backend = backend_from_url(os.environ.get("SAYIIR_DATABASE_URL", "sqlite:///sayiir.db"))
        await backend.open()
    """
    if not isinstance(url, str):
        raise TypeError(
            f"backend_from_url expects a URL string such as {SUPPORTED[1]!r}, "
            f"got {type(url).__name__}"
        )
    scheme, separator, rest = url.partition("://")
    if not separator or not scheme:
        raise BackendError(f"not a backend URL: {redact(url)!r}; expected {_supported()}")
    scheme = scheme.lower()
    if scheme == "memory":
        if rest.strip("/"):
            raise BackendError(f"memory:// takes no path or options, got {redact(url)!r}")
        return InMemoryBackend()
    if scheme == "sqlite":
        return _sqlite(url, rest)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise BackendError(f"unsupported backend URL scheme {scheme!r}; expected {_supported()}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: ``user:***@host``, ``?password=***``.

    Deliberately blunt: everything between the first ``:`` after ``//`` and the last
    ``@`` goes, so a password holding ``/`` or ``@`` is hidden too, and so does the value
    of every query parameter whose name mentions a password or secret (libpq's
    ``password=``, ``sslpassword=``). Over-masking is harmless; showing a password in a
    log is not.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    rest, question, query = rest.partition("?")
    at = rest.rfind("@")
    if at != -1:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***@{rest[at + 1 :]}"
    if question:
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
    return f"{scheme}://{rest}{question}{query}"


def _redact_parameter(part: str) -> str:
    name, equals, _ = part.partition("=")
    secret = any(word in unquote(name).lower() for word in ("password", "secret"))
    return f"{name}=***" if equals and secret else part


def sqlite_path(url: str) -> Path | None:
    """The database file a ``sqlite://`` URL names (absolute), or ``None`` for other URLs.

    Lets a caller check that a database exists before opening it, which would create it.
    Raises ``BackendError`` for a malformed SQLite URL, as ``backend_from_url`` does.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() != "sqlite":
        return None
    return Path(_sqlite_location(url, rest)).absolute()


def _sqlite(url: str, rest: str) -> SqliteBackend:
    path = _sqlite_location(url, rest)
    options = _sqlite_options(url, rest.partition("?")[2])
    try:
        return SqliteBackend(path, **options)
    except ValueError as exc:
        raise BackendError(f"invalid option in SQLite URL {redact(url)!r}: {exc}") from exc


def _sqlite_location(url: str, rest: str) -> str:
    location = rest.partition("?")[0]
    if not location.startswith("/"):
        raise BackendError(
            f"SQLite URL {redact(url)!r} has a host part; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = unquote(location[1:])
    if not path or path == ":memory:":
        raise BackendError(
            f"SQLite URL {redact(url)!r} names no database file; use sqlite:///path.db "
            "(or memory:// for a throwaway in-process backend)"
        )
    return path


def _sqlite_options(url: str, query: str) -> _SqliteOptions:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise BackendError(f"malformed query in SQLite URL {redact(url)!r}: {exc}") from exc
    options: _SqliteOptions = {}
    for name, value in pairs:
        if name == "synchronous":
            options["synchronous"] = value
        elif name == "busy_timeout":
            try:
                options["busy_timeout"] = float(value)
            except ValueError:
                raise BackendError(
                    f"busy_timeout in SQLite URL {redact(url)!r} must be seconds, not {value!r}"
                ) from None
        else:
            raise BackendError(
                f"unknown option {name!r} in SQLite URL {redact(url)!r}; "
                f"supported: {', '.join(_SQLITE_OPTIONS)}"
            )
    return options


def load_postgres_backend() -> type[Backend]:
    """The ``PostgresBackend`` class, imported on use: asyncpg is an optional extra."""
    try:
        module = importlib.import_module("sayiir_core.backends.postgres")
    except ImportError as exc:
        reason = f"{exc}; install the 'postgres' extra: pip install 'sayiir-py[postgres]'"
        raise BackendError(f"PostgreSQL support is not available: {reason}") from exc
    return cast("type[Backend]", module.PostgresBackend)


def _postgres(url: str) -> Backend:
    return load_postgres_backend()(url)  # type: ignore[call-arg]


def _supported() -> str:
    return ", ".join(SUPPORTED)
