"""How a task's exception is shown: the traceback from the task's own code down to the raise."""

from __future__ import annotations

import traceback


def format_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).strip()


# Frames of these modules lead up to the task's own code: the executor, the thread pool
# and the event loop. They are left out of the traceback a TaskError shows.
_RUNNER_MODULES = ("sayiir_core.runtime.", "concurrent.futures.", "asyncio.")
_MAX_TASK_FRAMES = 100


def task_traceback(error: BaseException) -> str | None:
    """The frames from the task function down to the raise, as Sayiir 1.0 shows them.

    ``Traceback (most recent call last):`` and the frames, without the final exception
    line (the message says it); ``None`` when the error did not come from the task's
    code (a timeout, an invalid input).
    """
    tb = error.__traceback__
    while tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(
        _RUNNER_MODULES
    ):
        tb = tb.tb_next
    if tb is None:
        return None
    frames = traceback.extract_tb(tb)
    omitted = len(frames) - _MAX_TASK_FRAMES
    lines = ["Traceback (most recent call last):\n"]
    if omitted > 0:  # a deep recursion: its innermost frames say where it went wrong
        frames = traceback.StackSummary.from_list(frames[omitted:])
        lines.append(f"  ... {omitted} outer frames omitted ...\n")
    lines.extend(frames.format())
    return "".join(lines).rstrip("\n")
