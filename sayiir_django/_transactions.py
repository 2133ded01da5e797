"""One backend operation = one transaction, retried when the database says "try again".

What is retried, on the backend's own transactions:

- SQLite's "database is locked" (another connection holds the write lock longer than
  the ``timeout`` option, or a deferred transaction could not take it), with a growing
  pause, for up to ``SAYIIR["SQLITE_LOCK_TIMEOUT"]`` seconds;
- PostgreSQL's serialization failures and deadlocks;
- a lost connection (a restarted server, ``pg_terminate_backend``, a dropped socket): the
  connection is closed and the operation runs again on a new one. If the connection
  was lost during COMMIT, the write may or may not have been applied; an operation
  that can tell (``resolve``) finds out, any other reports it as a ``BackendError``.

Inside the caller's own transaction (transactional submit) nothing is retried: a failed
statement has spoiled the caller's transaction, which only the caller can roll back.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.db import (
    DatabaseError,
    Error,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)

from sayiir_core.errors import BackendError

T = TypeVar("T")

logger = logging.getLogger("sayiir.django")

# PostgreSQL: serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_MAX_RECONNECTS = 3
_MAX_CONFLICT_RETRIES = 10


# One lock per SQLite alias, shared by every backend object on it (see _one_writer).
_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


def _forget_writer_locks_after_fork() -> None:
    # A lock held by a parent's thread at fork would stay held in the child forever.
    global _writer_locks_guard
    _writer_locks.clear()
    _writer_locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_writer_locks_after_fork)


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """What ``resolve`` returns when it found the lost commit applied."""

    value: T


Resolver = Callable[[], "Done[T] | None"]


@dataclass(frozen=True, slots=True)
class Database:
    """The alias an operation runs on and how long it may wait for SQLite's lock."""

    alias: str
    lock_timeout: float

    @property
    def vendor(self) -> str:
        return connections[self.alias].vendor

    def in_callers_transaction(self) -> bool:
        return connections[self.alias].in_atomic_block

    def run(
        self,
        action: str,
        body: Callable[[], T],
        *,
        resolve: Resolver[T] | None = None,
        atomic: bool = True,
        single_write: bool = False,
    ) -> T:
        """Run ``body`` on this thread's connection, retrying as above.

        ``atomic=False`` is for a single read statement, which needs no transaction of
        its own. ``single_write=True`` is for a body that sends one writing statement and
        nothing else: it runs in autocommit, as its own transaction, which saves the
        BEGIN and COMMIT round trips; a connection lost during it is resolved like one
        lost during COMMIT. ``IntegrityError`` is raised as it is, for the operation to
        handle.
        """
        if connections[self.alias].in_atomic_block:
            return self._once(action, body, atomic or single_write)
        return self._with_retries(action, body, resolve, atomic, single_write)

    def _once(self, action: str, body: Callable[[], T], atomic: bool) -> T:
        try:
            # A savepoint in the caller's transaction: a failure undoes only our part.
            with self._transaction(atomic):
                return body()
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise self.error(action, exc) from exc

    def _one_writer(self, atomic: bool) -> AbstractContextManager[object]:
        """On SQLite, this process's write transactions on the alias one at a time.

        SQLite has one write lock; a thread waiting for it in SQLite's busy handler
        sleeps in coarse steps (up to 100 ms) and may sleep on after it was freed, so
        a worker's threads queue here instead, each taking the lock as soon as the last
        one lets go (tests/django/test_sqlite_writers.py). Other processes still meet
        at SQLite's lock.
        """
        if not atomic or self.vendor != "sqlite":
            return nullcontext()
        with _writer_locks_guard:
            return _writer_locks.setdefault(self.alias, threading.Lock())

    def _transaction(self, atomic: bool) -> AbstractContextManager[object]:
        return transaction.atomic(using=self.alias) if atomic else nullcontext()

    def _with_retries(
        self,
        action: str,
        body: Callable[[], T],
        resolve: Resolver[T] | None,
        atomic: bool,
        single_write: bool,
    ) -> T:
        started = time.monotonic()
        pause = 0.002
        reconnects = conflicts = 0
        atomic = atomic and not single_write
        while True:
            self._drop_if_broken()
            raw = connections[self.alias].connection
            # A single write commits as it runs: any loss from here on may follow it.
            committing = single_write
            try:
                with self._one_writer(atomic), self._transaction(atomic):
                    result = body()
                    committing = committing or atomic  # from here on it comes from COMMIT
                return result
            except (OperationalError, InterfaceError) as exc:
                kind = self._classify(exc, raw)
                if kind == "locked":
                    waited = time.monotonic() - started
                    if waited > self.lock_timeout:
                        raise self.error(
                            action,
                            exc,
                            note=f"still locked after retrying for {waited:.1f}s "
                            '(SAYIIR["SQLITE_LOCK_TIMEOUT"])',
                        ) from exc
                    time.sleep(pause * (1 + random.random()))
                    pause = min(pause * 2, 0.1)
                    continue
                if kind == "conflict" and conflicts < _MAX_CONFLICT_RETRIES:
                    conflicts += 1
                    continue
                if kind != "lost" or reconnects >= _MAX_RECONNECTS:
                    raise self.error(action, exc) from exc
                reconnects += 1
                logger.warning(
                    "database %r: connection lost during %s; reconnecting", self.alias, action
                )
                connections[self.alias].close()
                if committing:
                    found = self._resolve(action, exc, resolve)
                    if found is not None:
                        return found.value
            except IntegrityError:
                raise
            except DatabaseError as exc:
                raise self.error(action, exc) from exc

    def _resolve(self, action: str, exc: Error, resolve: Resolver[T] | None) -> Done[T] | None:
        if resolve is None:
            raise self.error(
                action,
                exc,
                note="the connection was lost while committing, so whether it was applied "
                "is unknown",
            ) from exc
        for _ in range(_MAX_RECONNECTS):
            try:
                return resolve()
            except (OperationalError, InterfaceError):
                connections[self.alias].close()
        raise self.error(action, exc, note="and the database did not answer again") from exc

    def _classify(self, exc: Error, raw: object) -> str:
        """``locked``, ``conflict``, ``lost`` or ``error``; ``raw`` is the driver connection
        the attempt started on."""
        text = str(exc).lower()
        connection = connections[self.alias]
        if connection.vendor == "sqlite":
            return "locked" if "locked" in text or "busy" in text else "error"
        cause = exc.__cause__
        sqlstate = str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")
        if sqlstate in _RETRYABLE_SQLSTATES:
            return "conflict"
        # 08: connection exceptions; 57P: the server shut this session down. Without a
        # SQLSTATE the error came from the client side: the socket is gone.
        if not sqlstate or sqlstate.startswith(("08", "57P")):
            return "lost"
        # Django drops (and may already have replaced) a connection that failed to
        # roll back; otherwise ask the connection itself.
        if connection.connection is not raw or not connection.is_usable():
            return "lost"
        return "error"

    def _drop_if_broken(self) -> None:
        """Close this thread's connection if an earlier error left it unusable."""
        connection = connections[self.alias]
        if (
            connection.connection is not None
            and connection.errors_occurred
            and not connection.is_usable()
        ):
            connection.close()
        connection.errors_occurred = False

    def error(self, action: str, exc: Error, *, note: str | None = None) -> BackendError:
        text = str(exc).strip() or type(exc).__name__
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            text += (
                "; the sayiir_django tables are missing: run "
                f"`python manage.py migrate sayiir_django --database {self.alias}`"
            )
        if note:
            text += f"; {note}"
        return BackendError(f"database {self.alias!r}: {action} failed: {text}")
