"""Holding one pooled connection across a run's statements instead of one per statement.

A durable run sends its statements one after another (create, a commit per step, the
last read); acquiring and releasing a pooled connection around each one costs more
client CPU than encoding the commit (a setup hook, a timeout, a shielded release
task), so ``Session.hold()`` lets a task keep the connection it got between them.

A hold never changes what a statement does or how it is retried, only which
connection it runs on, and it never costs another operation a connection:

* The connection stays with the hold only after a statement that succeeded; one that
  failed (lost connection, timeout, cancellation) goes back to the pool as before.
* Statements running while the held one is busy (the lease heartbeat, a concurrent
  branch) use the pool as usual.
* An operation that finds the pool exhausted takes the connection of a hold that is
  between statements (``reclaim``), and a hold whose statement ends while anyone
  waits for the pool gives its connection back: a long step never sits on a
  connection another operation needs.
* A connection past ``max_lifetime_secs`` goes back to the pool, which replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[Any]


class Hold:
    """One task's (and its child tasks') claim on a pooled connection between statements.

    ``conn`` is the held connection (``None`` before the first statement, or after it
    went back to the pool); ``busy`` while a statement runs on it; ``open`` until the
    ``Session.hold()`` block that made it exits.
    """

    __slots__ = ("busy", "conn", "fresh_until", "open", "registry")

    def __init__(self, registry: HeldConnections) -> None:
        # A hold serves only the pool its registry belongs to: a pool closed, or left
        # behind by a fork, retires its registry and so every hold made for it.
        self.registry = registry
        self.conn: Conn | None = None
        self.fresh_until = 0.0
        self.busy = False
        self.open = True


# The hold of the running task, if any. Child tasks inherit it (asyncio copies the
# context); ``busy`` keeps two of them from using the connection at once.
current_hold: ContextVar[Hold | None] = ContextVar("sayiir_postgres_hold", default=None)


class HeldConnections:
    """A session's holds that sit between statements, and who waits for the pool."""

    __slots__ = ("idle", "max_lifetime", "release_timeout", "retired", "waiting")

    def __init__(self, max_lifetime: float, release_timeout: float) -> None:
        self.max_lifetime = max_lifetime
        self.release_timeout = release_timeout
        # Insertion-ordered: the hold idle longest is reclaimed first.
        self.idle: dict[Hold, None] = {}
        self.waiting = 0  # operations inside pool.acquire() right now
        self.retired = False  # its pool is closed or not this process's any more

    def current(self) -> Hold | None:
        """The running task's open hold on this registry's pool, if any."""
        hold = current_hold.get()
        if hold is None or hold.registry is not self or not hold.open:
            return None
        return hold

    def usable(self) -> Hold | None:
        """The running task's hold if it is free, marked busy."""
        hold = self.current()
        if hold is None or hold.busy:
            return None
        hold.busy = True
        return hold

    async def take(
        self, hold: Hold, pool: asyncpg.Pool, acquire: Callable[[], Awaitable[Conn]]
    ) -> Conn:
        """A connection for ``hold``'s next statement: the held one while it is fresh,
        else one from ``acquire``. On failure the hold is free again."""
        try:
            conn = hold.conn
            if conn is not None:
                self.idle.pop(hold, None)
                if time.monotonic() < hold.fresh_until:
                    return conn
                hold.conn = None  # past its lifetime: the pool replaces it
                await pool.release(conn, timeout=self.release_timeout)
            return await acquire()
        except BaseException:
            self.drop(hold)
            raise

    def keep(self, hold: Hold, conn: Conn, *, succeeded: bool) -> bool:
        """After a statement: keep ``conn`` in ``hold`` unless it failed or someone needs
        it; ``False`` means the caller gives it back to the pool."""
        if not succeeded or not hold.open or self.waiting or self.retired:
            self.drop(hold)
            return False
        hold.busy = False
        if hold.conn is not conn:
            hold.conn = conn
            hold.fresh_until = getattr(conn, "opened_at", time.monotonic()) + self.max_lifetime
        self.idle[hold] = None
        return True

    def drop(self, hold: Hold) -> None:
        """``hold`` keeps no connection (the one it had goes or went back to the pool)."""
        hold.busy = False
        hold.conn = None
        self.idle.pop(hold, None)

    def reclaim(self) -> Conn | None:
        """The connection of the hold idle longest, taken from it (``None``: no hold idle)."""
        for hold in self.idle:
            del self.idle[hold]
            conn, hold.conn = hold.conn, None
            return conn
        return None

    def close(self, hold: Hold) -> Conn | None:
        """``hold``'s block exits: its connection, to release, unless a statement has it."""
        hold.open = False
        self.idle.pop(hold, None)
        if hold.busy:
            return None  # that statement's keep() sees the hold closed and releases it
        conn, hold.conn = hold.conn, None
        return conn

    def retire(self) -> list[Conn]:
        """The pool is closing or left behind: no hold keeps a connection from now on.
        Returns the idle held connections, taken from their holds."""
        self.retired = True
        taken = []
        while (conn := self.reclaim()) is not None:
            taken.append(conn)
        return taken
