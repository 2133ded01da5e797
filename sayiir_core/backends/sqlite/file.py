"""The file and its connection under ``SqliteBackend``: open, close, fork, and ``_run``.

Each backend object has one connection, served by its own thread (``ConnectionThread``);
a transaction runs in place only while the connection is idle and its commits are quick
(under a millisecond, fsync included), and never waits there for a lock; everything
else, lock waits and slow disks included, runs on the thread. After ``os.fork()`` the
child leaves the parent's connection alone and opens its own on first use.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sayiir_core.backends.base import OpensAndCloses
from sayiir_core.backends.forks import ProcessOwner
from sayiir_core.backends.notify import notifiers_for
from sayiir_core.backends.sqlite.checkpoints import CheckpointSchedule, checkpoint
from sayiir_core.backends.sqlite.connection import ConnectionThread
from sayiir_core.backends.sqlite.locking import backend_error, transact
from sayiir_core.backends.sqlite.schema import open_database
from sayiir_core.errors import BackendError

T = TypeVar("T")

SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
# A transaction: a function of the connection, run in place or on the connection's thread.
Transaction = Callable[[sqlite3.Connection], T]


class SqliteFile(OpensAndCloses):
    """One SQLite file opened by one connection thread, and the in-process notifiers of
    its work and finishes; ``SqliteBackend`` builds the backend contract on it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        # Absolute now, so messages name the real file and a later chdir changes nothing.
        self._path = Path(path).absolute()
        self._synchronous = mode
        self._busy_timeout = float(busy_timeout)
        self._owner = ProcessOwner()
        # Guards _worker: open and close may race from several threads and loops.
        self._lock = threading.Lock()
        self._worker: ConnectionThread | None = None
        self._checkpoints = CheckpointSchedule()
        self._stop_when_collected: weakref.finalize[[], SqliteFile] | None = None
        notifiers = notifiers_for(self._path)
        self._notifier, self._finished = notifiers.work, notifiers.finish

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        """Create the file and its directory if needed, then apply pending migrations."""
        self._leave_parent_after_fork()
        with self._lock:
            worker = self._worker
            if worker is None:
                worker = self._worker = ConnectionThread(
                    functools.partial(
                        open_database,
                        self._path,
                        synchronous=self._synchronous,
                        busy_timeout=self._busy_timeout,
                    ),
                    name=f"sayiir-sqlite:{self._path.name}",
                    not_open=functools.partial(_not_open, self._path),
                )
                # A backend dropped without close() still lets its thread end. Nothing
                # of the backend is in the thread's reach, so it can be collected.
                self._stop_when_collected = weakref.finalize(self, worker.stop)
                self._stop_when_collected.atexit = False
        try:
            await worker.opened()
        except Exception:
            # The thread has stopped; the next open() starts afresh.
            with self._lock:
                if self._worker is worker:
                    self._worker = None
            raise

    async def close(self) -> None:
        self._leave_parent_after_fork()
        with self._lock:
            worker, self._worker = self._worker, None
            if self._stop_when_collected is not None:
                self._stop_when_collected.detach()
                self._stop_when_collected = None
        if worker is not None:
            # Leaves the WAL short for the next process, even if this one wrote little.
            worker.run_later(checkpoint)
            try:
                await worker.close()
            except sqlite3.Error as exc:
                raise backend_error(self._path, "close", exc, self._busy_timeout) from exc

    # -- the connection ---------------------------------------------------------------

    async def _run(
        self, action: str, begin: str | None, transaction: Transaction[T], *, here: bool = True
    ) -> T:
        """Run ``transaction`` inside ``begin`` ... COMMIT, in place if ``here`` and the
        connection is idle and quick and no lock is in the way, else on its thread.

        Any exception rolls back; ``sqlite3`` errors surface as ``BackendError``.
        """
        worker = self._worker
        if worker is None or self._owner.moved_on:
            worker = await self._reopened_after_fork()
        run = functools.partial(
            transact,
            transaction=transaction,
            begin=begin,
            path=self._path,
            action=action,
            busy_timeout=self._busy_timeout,
        )
        writes = begin == "BEGIN IMMEDIATE"
        result = await worker.call(
            run, try_here=functools.partial(run, wait=False) if here else None, writes=writes
        )
        if writes:
            self._checkpoints.wrote(worker)
        return result

    async def _write(self, action: str, transaction: Transaction[T]) -> T:
        # IMMEDIATE takes the write lock at BEGIN: a deferred transaction that later
        # upgrades can fail with SQLITE_BUSY at once instead of waiting busy_timeout.
        return await self._run(action, "BEGIN IMMEDIATE", transaction)

    async def _reopened_after_fork(self) -> ConnectionThread:
        """Open a connection of this process's own if the parent's was open."""
        if self._worker is None:
            raise _not_open(self._path)
        await self.open()
        worker = self._worker
        if worker is None:  # closed meanwhile by another task
            raise _not_open(self._path)
        return worker

    def _leave_parent_after_fork(self) -> None:
        """In a forked child, forget the parent's connection without touching it."""
        self._owner.claim(self._drop_inherited)

    def _drop_inherited(self) -> None:
        # The parent's lock may have been held by one of its threads at the fork.
        self._lock = threading.Lock()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.abandon()
        if self._stop_when_collected is not None:
            self._stop_when_collected.detach()
            self._stop_when_collected = None
        notifiers = notifiers_for(self._path)
        self._notifier, self._finished = notifiers.work, notifiers.finish


def _not_open(path: Path) -> BackendError:
    return BackendError(f"SqliteBackend({str(path)!r}) is not open; call open() first")
