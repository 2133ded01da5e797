"""PostgreSQL's hot statements prepared once per connection, then run by ``EXECUTE``.

A step's commit and a new instance are each one large statement (see ``_postgres``).
Sent as text, the server parses and plans it again on every call: measured on S1, that
was half the server's time per step (0.8 ms of CPU against 0.4 ms for
``PostgresBackend``, whose driver prepares its statements). Prepared, each connection
plans it once and afterwards receives a short ``EXECUTE``.

Django leaves psycopg's own prepared statements off (``prepare_threshold`` is None, for
connection poolers) and binds parameters on the client, so this uses SQL's ``PREPARE``
and ``EXECUTE`` through the Django cursor: query logging, ``execute_wrapper`` and error
translation apply as to any other query, on psycopg 3 and 2 alike.

The statement text is sent as it is instead:

- inside a transaction (the caller's ``atomic`` block): a failed ``EXECUTE`` would spoil
  it, and a submit there is rare enough not to matter;
- when the database's settings have ``DISABLE_SERVER_SIDE_CURSORS``, Django's setting
  for a transaction-mode pooler (PgBouncer), where the next statement may reach another
  server connection, which never saw the ``PREPARE``.

A session that dropped its prepared statements (``DISCARD ALL``, ``DEALLOCATE``)
prepares them again: an ``EXECUTE`` of an unknown statement runs nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, ProgrammingError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

# %(name)s::type, the only placeholders the hot statements use.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s(?:::(\w+(?:\[\])?))?")
_UNKNOWN_STATEMENT = "26000"  # invalid_sql_statement_name
_ALREADY_PREPARED = "42P05"  # duplicate_prepared_statement
# Where each connection wrapper keeps the statements its current session has prepared.
_SESSION_STATE = "_sayiir_prepared"


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement with ``%(name)s::type`` placeholders, as text and as prepared."""

    text: str
    name: str
    prepare: str
    execute: str

    @classmethod
    def of(cls, text: str) -> Statement:
        types: dict[str, str] = {}

        def number(match: re.Match[str]) -> str:
            name, sql_type = match.group(1), match.group(2)
            if sql_type is None:
                raise ValueError(f"internal error: placeholder {name!r} has no ::type")
            if types.setdefault(name, sql_type) != sql_type:
                raise ValueError(f"internal error: placeholder {name!r} has two types")
            return f"${list(types).index(name) + 1}::{sql_type}"

        body = _PLACEHOLDER.sub(number, text).replace("%%", "%")
        # Named after the text: a session never holds two statements under one name.
        name = "sayiir_" + hashlib.blake2s(text.encode(), digest_size=8).hexdigest()
        arguments = ", ".join(f"%({key})s::{sql_type}" for key, sql_type in types.items())
        return cls(
            text=text,
            name=name,
            prepare=f"PREPARE {name} ({', '.join(types.values())}) AS {body}",
            execute=f"EXECUTE {name}({arguments})",
        )


def fetch_one(
    alias: str, statement: Statement, params: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """Run ``statement`` on this thread's connection to ``alias``; its first row."""
    connection = connections[alias]
    if connection.in_atomic_block or connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        return _fetch_one(connection, statement.text, params)
    connection.ensure_connection()
    if statement.name not in _prepared_in_session(connection):
        _prepare(connection, statement)
    try:
        return _fetch_one(connection, statement.execute, params)
    except ProgrammingError as exc:
        if _sqlstate(exc) != _UNKNOWN_STATEMENT:
            raise
    _prepared_in_session(connection).clear()
    _prepare(connection, statement)
    return _fetch_one(connection, statement.execute, params)


def _fetch_one(
    connection: BaseDatabaseWrapper, sql: str, params: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def _prepare(connection: BaseDatabaseWrapper, statement: Statement) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement.prepare)
    except DatabaseError as exc:
        # Prepared already by an earlier user of this session (a pooled connection).
        if _sqlstate(exc) != _ALREADY_PREPARED:
            raise
    _prepared_in_session(connection).add(statement.name)


def _prepared_in_session(connection: BaseDatabaseWrapper) -> set[str]:
    """The statements prepared on ``connection``'s current session (a new one has none)."""
    session = id(connection.connection)
    state: tuple[int, set[str]] | None = getattr(connection, _SESSION_STATE, None)
    if state is None or state[0] != session:
        # A reused id (a new session at the old one's address) is caught by the
        # "unknown statement" error and prepared again.
        state = (session, set())
        setattr(connection, _SESSION_STATE, state)
    return state[1]


def _sqlstate(exc: BaseException) -> str:
    cause = exc.__cause__
    return str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")
