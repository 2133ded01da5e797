"""WAL checkpoints on the connection's thread, never inside a commit.

SQLite's automatic checkpoint runs inside the commit that grows the WAL past 1,000
pages: that commit copies pages into the database file and syncs it, milliseconds in
which an event loop running the commit itself (``ConnectionThread``'s ``try_here``)
would be held. Our connections turn it off (``schema.open_database``) and the backend
queues a passive checkpoint on the connection's thread every ``WRITES_PER_CHECKPOINT``
write transactions instead, with nobody waiting for it.
"""

from __future__ import annotations

import contextlib
import sqlite3

from sayiir_core.backends.sqlite.connection import ConnectionThread

# A step's commit writes about five pages, so a checkpoint every 200 writes keeps the
# WAL near SQLite's default of 1,000 pages.
WRITES_PER_CHECKPOINT = 200


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy what the WAL holds into the database, without waiting for any lock.

    PASSIVE leaves what readers or another writer still need; a later checkpoint (ours,
    or another process's) copies it. Failing here loses nothing, hence no error.
    """
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class CheckpointSchedule:
    """Counts write transactions; every ``WRITES_PER_CHECKPOINT``, queues a checkpoint."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes = 0

    def wrote(self, worker: ConnectionThread) -> None:
        self._writes += 1
        if self._writes >= WRITES_PER_CHECKPOINT:
            self._writes = 0
            worker.run_later(checkpoint)
