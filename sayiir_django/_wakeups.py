"""Wake-ups: idle workers, orchestrators waiting for shared steps, clients waiting for a finish.

Within the process, the notifiers of a database alias (shared by every backend object on
it) fire when the transaction that made the change commits (``on_commit``), so a
rolled-back submit wakes nobody. On PostgreSQL the same transaction also sends a
``NOTIFY``, which PostgreSQL delivers at commit to every process listening; a
``Listener`` thread per backend receives them. Elsewhere, other processes' changes are
found by polling.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from django.db import connections, transaction

from sayiir_core.backends.notify import FinishNotifier, WorkNotifier

logger = logging.getLogger("sayiir.django")

WORK_CHANNEL = "sayiir_django_work"
STEPS_CHANNEL = "sayiir_django_steps"
DONE_CHANNEL = "sayiir_django_done"
# How long the listener blocks on its socket before checking whether to stop.
_LISTEN_SLICE = 0.25
_RECONNECT_PAUSE = 1.0


@dataclass
class Notifiers:
    """The in-process notifiers of one database alias."""

    work: WorkNotifier = field(default_factory=WorkNotifier)
    steps: WorkNotifier = field(default_factory=WorkNotifier)
    finish: FinishNotifier = field(default_factory=FinishNotifier)

    def wake_everyone(self) -> None:
        """Changes may have gone unheard (a listener that was down): wake every waiter."""
        self.work.notify()
        self.steps.notify()
        self.finish.notify_all()


_by_alias: dict[str, Notifiers] = {}
_by_alias_lock = threading.Lock()


def notifiers_for(alias: str) -> Notifiers:
    with _by_alias_lock:
        return _by_alias.setdefault(alias, Notifiers())


def _forget_after_fork() -> None:
    # A child must not wake (or wait on) waiters registered on the parent's loops.
    global _by_alias_lock
    _by_alias.clear()
    _by_alias_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _notify(alias: str, channel: str, payload: str) -> None:
    """Send a NOTIFY with the current transaction (PostgreSQL delivers it at commit)."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


def announce_work(alias: str) -> None:
    """Inside a transaction: something became runnable; wake idle workers at commit."""
    _notify(alias, WORK_CHANNEL, "")
    transaction.on_commit(notifiers_for(alias).work.notify, using=alias)


def announce_step_finished(alias: str) -> None:
    """Inside a transaction: a shared step has an outcome; wake its orchestrator at commit."""
    _notify(alias, STEPS_CHANNEL, "")
    transaction.on_commit(notifiers_for(alias).steps.notify, using=alias)


def announce_finish(alias: str, instance_id: str) -> None:
    """Inside a transaction: the instance finished; fire its watches at commit."""
    _notify(alias, DONE_CHANNEL, instance_id)
    finish = notifiers_for(alias).finish
    transaction.on_commit(lambda: finish.notify(instance_id), using=alias)


def wake_in_process(alias: str, *, work: bool = False, finished: str | None = None) -> None:
    """At commit, wake this process's waiters: idle workers (``work``), and the watches
    of instance ``finished``. For a statement that sent its own ``NOTIFY``."""
    notifiers = notifiers_for(alias)
    if work:
        transaction.on_commit(notifiers.work.notify, using=alias)
    if finished is not None:
        finish, instance_id = notifiers.finish, finished
        transaction.on_commit(lambda: finish.notify(instance_id), using=alias)


class Listener:
    """A LISTEN connection on a thread of its own, forwarding NOTIFYs to the notifiers.

    Started on first need, reconnects after losing its connection (and then wakes
    everyone, since notifications sent meanwhile were lost), stopped by ``stop()``. Needs
    psycopg 3; with another driver, waiters rely on polling alone.
    """

    def __init__(self, alias: str) -> None:
        self._alias = alias
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def ensure_started(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._thread = os.getpid(), None
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._serve, name=f"sayiir-listen-{self._alias}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and self._pid == os.getpid():
            thread.join()

    def _serve(self) -> None:
        notifiers = notifiers_for(self._alias)
        listened_before = False
        while not self._stopping.is_set():
            wrapper = connections.create_connection(self._alias)
            try:
                wrapper.ensure_connection()
                raw = wrapper.connection
                if not callable(getattr(raw, "notifies", None)):
                    logger.info(
                        "database %r: its driver cannot LISTEN (psycopg 3 can); polling only",
                        self._alias,
                    )
                    return
                raw.autocommit = True
                for channel in (WORK_CHANNEL, STEPS_CHANNEL, DONE_CHANNEL):
                    raw.execute(f"LISTEN {channel}")
                if listened_before:
                    # Notifications sent while the connection was down went unheard.
                    # (Before the first LISTEN, waiters rely on their re-read backstop:
                    # waking them all then would fire watches of unfinished instances.)
                    notifiers.wake_everyone()
                listened_before = True
                while not self._stopping.is_set():
                    for note in raw.notifies(timeout=_LISTEN_SLICE):
                        self._dispatch(notifiers, note.channel, note.payload)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                logger.warning(
                    "database %r: LISTEN connection lost (%s); reconnecting", self._alias, exc
                )
                self._stopping.wait(_RECONNECT_PAUSE)
            finally:
                try:
                    wrapper.close()
                except Exception:  # a connection that died cannot be closed cleanly
                    logger.debug("closing the LISTEN connection failed", exc_info=True)

    @staticmethod
    def _dispatch(notifiers: Notifiers, channel: str, payload: str) -> None:
        if channel == WORK_CHANNEL:
            notifiers.work.notify()
        elif channel == STEPS_CHANNEL:
            notifiers.steps.notify()
        elif channel == DONE_CHANNEL:
            notifiers.finish.notify(payload)
