"""Where a ``PostgresBackend`` URL points: ``Address`` for messages, the ``?schema=`` option.

Messages name the host, port, database and user, never the password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["Address", "split_schema_option"]


@dataclass(frozen=True, slots=True)
class Address:
    """Where a URL points, for messages: never includes the password."""

    host: str
    port: str
    database: str
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        hostspec = parts.netloc.rpartition("@")[2]
        try:
            host, port = parts.hostname or "", str(parts.port or "")
        except ValueError:  # several hosts ("h1:5432,h2:5432"): show them as written
            host, port = hostspec, ""
        user = unquote(parts.username or "") or query.get("user", "")
        database = unquote(parts.path.lstrip("/")) or query.get("dbname", "") or user
        return cls(
            host=host or query.get("host", "") or "localhost",
            port=port or query.get("port", "") or "5432",
            database=database or "(default)",
            user=user or "(default)",
            password=unquote(parts.password or "") or query.get("password", ""),
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}, database {self.database!r}, user {self.user!r}"

    def scrub(self, text: str) -> str:
        """``text`` with the password masked, whatever put it there."""
        return text.replace(self.password, "***") if self.password else text


def split_schema_option(url: str, schema: str) -> tuple[str, str]:
    """Take ``?schema=`` out of ``url`` (asyncpg would send it to the server as a setting)."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in options if key == "schema"]
    if not named:
        return url, schema
    if schema != "sayiir" and named[-1] != schema:
        raise ValueError(f"schema given twice: {named[-1]!r} in the URL and {schema!r}")
    rest = urlencode([(key, value) for key, value in options if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), named[-1]
