"""``ProcessOwner``: whether this process is the one a backend's connections belong to.

After ``os.fork()`` the child holds copies of the parent's sockets, locks and event-loop
objects. None of them is the child's to use: a socket is shared with the parent (a
query from the child interleaves with the parent's on the wire, a ``Terminate`` closes
the parent's session), a lock another thread held at the fork stays held forever, and
a loop's epoll instance is shared too, so even unregistering a socket from it in the
child deafens the parent. The rule every shipped backend follows: ``open()`` in a
process other than the one that opened it *forgets* what it inherited (never closes
it, which would act on the parent's behalf) and opens afresh.

Forks are counted by an ``os.register_at_fork`` hook, so telling costs no system call
on the hot path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["ProcessOwner", "keep_forever"]

_forks = 0
_claim_lock = threading.Lock()
# Objects inherited from a parent process that must never be finalised here: their
# finalisers would close, terminate or unregister what the parent still uses.
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    global _forks, _claim_lock
    _forks += 1
    # Another thread may have held it at the fork; that thread does not exist here.
    _claim_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def keep_forever(*inherited: object) -> None:
    """Hold ``inherited`` (a parent's pool, connections, tasks) until this process exits.

    Dropping the last reference would run their finalisers (asyncpg terminates an
    unclosed connection, which unregisters its socket from the parent's shared epoll
    instance). Kept instead: a bounded leak of one set per fork, freed at exit.
    """
    _inherited.extend(thing for thing in inherited if thing is not None)


class ProcessOwner:
    """Remembers the process that created it; ``moved_on`` once a fork happened since."""

    __slots__ = ("_forks", "pid")

    def __init__(self) -> None:
        self._forks = _forks
        self.pid = os.getpid()

    @property
    def moved_on(self) -> bool:
        """True in a process forked after this owner was (last) claimed."""
        return self._forks != _forks

    def claim(self, drop_inherited: Callable[[], None]) -> None:
        """Make this process the owner, calling ``drop_inherited`` first if it was another.

        ``drop_inherited`` forgets what the parent left (synchronously, sending nothing).
        Thread-safe: of several threads of the child opening at once, one drops and the
        others wait until it has, so none of them sees the parent's connections.
        """
        if not self.moved_on:
            return
        with _claim_lock:
            if self.moved_on:
                drop_inherited()
                self._forks, self.pid = _forks, os.getpid()
