"""An event loop of the calling thread's own, for ``run_workflow`` runs that store nothing.

The sync API runs its coroutines on the process's sayiir loop thread (``loop_thread``),
and a sync step from there on a task thread: a step then costs two thread wake-ups and
the call one more hop each way. A run without persistence shares nothing with anyone
(no backend, no lease to renew, no cancel or pause to hear of), so it can run on a loop
private to the calling thread, and a sync step the run has nothing to do beside can run
inline on it (``InstanceRunner(inline=...)``): blocking that loop blocks nobody else.

Each thread keeps one such loop and reuses it; it is closed when the thread ends (at
exit for the main thread). ``caller_loop()`` says ``None`` where it cannot serve:

- a loop already runs on this thread: async code calling the sync API, which keeps
  today's path (and errors), or a step of a run on this loop calling the sync API again,
  which then goes through the loop thread (the private loop is busy up the stack);
- on the main thread, while a Python signal handler other than Python's own Ctrl-C
  handler is installed (a server's SIGTERM one, pytest-timeout's SIGALRM one): Python
  runs handlers on the main thread, and an exception one raises (``sys.exit()`` on
  SIGTERM, say) inside an inline step would be taken for the step's own failure, where
  today it ends the blocking call at once. These calls keep today's path.

Ctrl-C keeps its meaning: for the run, Python's SIGINT handler is swapped for one that
notes the press before raising ``KeyboardInterrupt``, so the executor can tell the
user's Ctrl-C (it stops the run) from a ``KeyboardInterrupt`` a step raises itself (a
failure of the step, as before). The steps of such a run see the calling thread as
theirs (``threading.current_thread()``, thread-locals, log records' thread name).

After ``os.fork()`` the child never touches a loop inherited from the parent (its epoll
instance and self-pipe are shared with the parent): it starts its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

# The C module's functions, not ``signal.getsignal``/``signal.signal``: those convert
# every answer to an enum (raising and catching a ValueError for a function), ten times
# dearer, and a run on the main thread asks about every signal.
_signal = importlib.import_module("_signal")
_getsignal: Callable[[int], object] = _signal.getsignal
_setsignal: Callable[[int, Callable[[int, FrameType | None], Any]], object] = _signal.signal
# What ``_getsignal`` says for a signal without a Python handler.
_NO_PYTHON_HANDLER = frozenset({0, 1, None})  # SIG_DFL, SIG_IGN, set outside Python
_OTHER_SIGNALS = tuple(sorted(int(s) for s in signal.valid_signals() if s != signal.SIGINT))


class CallerLoop:
    """One thread's private event loop; ``run`` runs a coroutine on it to the end."""

    __slots__ = ("_pid", "ctrl_c_pressed", "loop", "running")

    def __init__(self) -> None:
        # asyncio.new_event_loop, as the loop thread does: an installed policy (uvloop) holds.
        self.loop = asyncio.new_event_loop()
        self._pid = os.getpid()
        self.running = False
        self.ctrl_c_pressed = False

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` here until it ends; its result or error comes back here."""
        loop = self.loop
        self.running = True
        marker = None
        try:
            self.ctrl_c_pressed = False
            if _on_main_thread() and _python_handles_ctrl_c():
                marker = _mark_ctrl_c(self)
            task = loop.create_task(coroutine)
            try:
                return loop.run_until_complete(task)
            except BaseException:
                _unwind(loop, task)
                raise
        finally:
            if marker is not None:
                _restore_ctrl_c(marker)
            self.running = False

    def __del__(self) -> None:
        # The thread ended (its thread-local storage went) or the process exits.
        loop = self.loop
        if os.getpid() != self._pid:
            _inherited.append(loop)  # the parent's: closing it would unregister its fds
        elif not loop.is_running() and not loop.is_closed():
            loop.close()


_local = threading.local()
_inherited: list[asyncio.AbstractEventLoop] = []


def caller_loop() -> CallerLoop | None:
    """This thread's private loop, free to run a coroutine; ``None`` where it cannot serve."""
    here: CallerLoop | None = getattr(_local, "loop", None)
    if here is not None and here.running:
        return None  # a run on it is up the stack: a step calls the sync API
    if asyncio._get_running_loop() is not None:
        return None
    if _on_main_thread() and not _only_ctrl_c_handled():
        return None
    if here is None or here.loop.is_closed():
        here = _local.loop = CallerLoop()
    return here


def on_caller_loop() -> bool:
    """Whether this thread runs a coroutine on its private loop right now."""
    here: CallerLoop | None = getattr(_local, "loop", None)
    return here is not None and here.running


def ctrl_c_during_caller_run() -> bool | None:
    """During a run on this thread's private loop: whether the user pressed Ctrl-C.

    ``None`` when no such run is on this thread (the caller keeps its own rule).
    """
    here: CallerLoop | None = getattr(_local, "loop", None)
    if here is None or not here.running:
        return None
    return here.ctrl_c_pressed


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _python_handles_ctrl_c() -> bool:
    return _getsignal(signal.SIGINT) is signal.default_int_handler


def _only_ctrl_c_handled() -> bool:
    """No Python signal handler is installed but Python's own SIGINT one, if that.

    SIGINT ignored (a background job) or left to the system is fine too: then no
    ``KeyboardInterrupt`` comes from it.
    """
    getsignal, none = _getsignal, _NO_PYTHON_HANDLER
    if not _python_handles_ctrl_c() and getsignal(signal.SIGINT) not in none:
        return False
    return all(getsignal(number) in none for number in _OTHER_SIGNALS)


class _CtrlCMarker:
    """SIGINT's handler during a run: note the press, then do what Python's own does."""

    __slots__ = ("here",)

    def __init__(self, here: CallerLoop) -> None:
        self.here = here

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.here.ctrl_c_pressed = True
        raise KeyboardInterrupt


def _mark_ctrl_c(here: CallerLoop) -> _CtrlCMarker:
    marker = _CtrlCMarker(here)
    _setsignal(signal.SIGINT, marker)
    return marker


def _restore_ctrl_c(marker: _CtrlCMarker) -> None:
    # A step may have installed a handler of its own meanwhile: that one stays.
    if _getsignal(signal.SIGINT) is marker:
        _setsignal(signal.SIGINT, signal.default_int_handler)


def _unwind(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """The run was interrupted (Ctrl-C in the loop's wait): cancel it and let it unwind.

    What the loop thread does for an interrupted caller; here nobody else would ever
    run the loop to the end of the cancellation. An exception a done task ended with
    (the interruption itself, raised out of a step) is marked as seen.
    """
    if task.done():
        if not task.cancelled():
            task.exception()
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        loop.run_until_complete(task)


def _close_at_exit() -> None:
    here: CallerLoop | None = getattr(_local, "loop", None)
    if here is not None and not here.running and os.getpid() == here._pid:
        here.loop.close()


def _forget_in_child() -> None:
    # The forking thread's loop is the parent's too (other threads' loops went with their
    # threads, and CallerLoop.__del__ leaves them alone here).
    # Dropped here, CallerLoop.__del__ keeps it unclosed (a step that forked goes on
    # running on it in the child).
    _local.loop = None


atexit.register(_close_at_exit)
os.register_at_fork(after_in_child=_forget_in_child)
