"""The Celery settings the bridge depends on, checked when a worker starts.

Each problem names the setting, what was found, why it matters and the exact line that
fixes it. ``SayiirCelery`` raises ``CeleryConfigError`` with all of them at worker
start (``check_config="raise"``, the default), or logs them (``"warn"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sayiir_core.workflow.workflow import Workflow

# Redis and SQS redeliver a message not acknowledged within this many seconds.
_VISIBILITY_TRANSPORTS = frozenset({"redis", "rediss", "sqs", "sentinel"})
_DEFAULT_VISIBILITY_TIMEOUT = 3600.0
_UNSUPPORTED_POOLS = ("gevent", "eventlet")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One setting to change: ``fix`` is the line to write in the app's configuration."""

    setting: str
    found: Any
    why: str
    fix: str

    def __str__(self) -> str:
        return f"{self.setting} is {self.found!r}: {self.why}. Fix: {self.fix}"


class CeleryConfigError(Exception):
    """The Celery app is configured in a way the bridge cannot work with."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"sayiir_celery: the Celery configuration needs changes:\n{lines}")


def broker_transport(app: Any) -> str:
    """The broker's transport name (``redis``, ``amqp``...), from ``broker_url``."""
    url = app.conf.broker_url or "amqp://"
    if isinstance(url, (list, tuple)):
        url = url[0]
    first = str(url).split(";")[0]
    scheme = urlsplit(first).scheme or "amqp"
    return scheme.split("+")[0]


def longest_timeout(workflows: Iterable[Workflow]) -> tuple[float | None, list[str]]:
    """The longest ``@task(timeout=)`` of the workflows' steps, and the steps without one."""
    longest: float | None = None
    unbounded: list[str] = []
    for workflow in workflows:
        for task_id, task in workflow.tasks.items():
            seconds = task.metadata.timeout_secs
            if seconds is None:
                unbounded.append(f"{workflow.workflow_id}.{task_id}")
            elif longest is None or seconds > longest:
                longest = seconds
    return longest, unbounded


def check_config(
    app: Any,
    task_name: str,
    workflows: Iterable[Workflow],
    *,
    pool: str | None = None,
    acks_late: bool = True,
    continue_for: float = 0.0,
) -> list[ConfigProblem]:
    """Every problem with ``app``'s configuration for the bridge's task ``task_name``.

    ``acks_late=False``: the bridge was asked for early acknowledgement, so the task's
    ``acks_late`` is not required. ``continue_for``: how long a task may go on starting
    the next steps of a chain (``SayiirCelery(continue_for=...)``); its message is
    acknowledged only after the last of them, so the visibility timeout must cover it
    on top of the longest step.
    """
    conf = app.conf
    problems: list[ConfigProblem] = []
    if conf.task_always_eager:
        problems.append(
            ConfigProblem(
                "task_always_eager",
                True,
                "steps would run inside the caller, outside any worker, lease or checkpoint",
                "app.conf.task_always_eager = False",
            )
        )
    accepted = [str(c) for c in (conf.accept_content or [])]
    if not any(c in ("json", "application/json") for c in accepted):
        problems.append(
            ConfigProblem(
                "accept_content",
                accepted,
                "step messages are JSON; a worker would reject them",
                f"app.conf.accept_content = {[*accepted, 'json']!r}",
            )
        )
    if conf.worker_prefetch_multiplier != 1:
        problems.append(
            ConfigProblem(
                "worker_prefetch_multiplier",
                conf.worker_prefetch_multiplier,
                "a worker process would reserve messages it cannot start while a long step "
                "runs, so fork branches wait behind it while other workers are idle",
                "app.conf.worker_prefetch_multiplier = 1",
            )
        )
    task = app.tasks.get(task_name)
    if acks_late and task is not None and not task.acks_late:
        problems.append(
            ConfigProblem(
                f"acks_late of task {task_name!r}",
                False,
                "a message would be acknowledged before its step ran, so a lost worker "
                "loses it until the sweeper sends it again",
                f"remove the override of acks_late for {task_name!r} (task_annotations), "
                "or ask for it: SayiirCelery(..., acks_late=False)",
            )
        )
    if broker_transport(app) in _VISIBILITY_TRANSPORTS:
        options = conf.broker_transport_options or {}
        visibility = float(options.get("visibility_timeout", _DEFAULT_VISIBILITY_TIMEOUT))
        longest, _ = longest_timeout(workflows)
        # A task begins steps for up to continue_for seconds; the last one may then run
        # for its whole timeout before the message is acknowledged.
        held = (longest or 0.0) + continue_for
        if held > 0 and visibility <= held:
            wanted = math.ceil((longest or 0.0) * 2 + continue_for)
            problems.append(
                ConfigProblem(
                    "broker_transport_options['visibility_timeout']",
                    visibility,
                    f"{_how_long_a_message_runs(longest, continue_for)}; the broker would "
                    "deliver its message again to another worker before it finished",
                    f"app.conf.broker_transport_options = {{**app.conf.broker_transport_options, "
                    f"'visibility_timeout': {wanted}}}",
                )
            )
    if pool is not None and any(name in pool for name in _UNSUPPORTED_POOLS):
        problems.append(
            ConfigProblem(
                "worker pool",
                pool,
                "the bridge runs steps on its own event-loop thread, which green threads "
                "would block",
                "start the worker with --pool=prefork (default), --pool=threads or --pool=solo",
            )
        )
    return problems


def _how_long_a_message_runs(longest: float | None, continue_for: float) -> str:
    parts = []
    if continue_for > 0:
        parts.append(
            f"a step task may go on starting its chain's next steps for {continue_for:g} s "
            "(continue_for)"
        )
    if longest is not None:
        parts.append(f"a step may run {longest:g} s (its timeout)")
    return ", then ".join(parts)
