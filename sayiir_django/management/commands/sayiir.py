"""``manage.py sayiir``: run a worker, inspect and steer instances, check the setup.

::

    manage.py sayiir worker [--concurrency N] [--max-steps N]
    manage.py sayiir list [--status S] [--workflow ID] [--limit N]
    manage.py sayiir status ID | history ID
    manage.py sayiir signal ID NAME [JSON] | cancel ID | pause ID | unpause ID
    manage.py sayiir retry-from ID STEP
    manage.py sayiir healthcheck
"""

from __future__ import annotations

import datetime as dt
import json
from argparse import SUPPRESS, ArgumentParser
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sayiir_core import Status, WorkflowError, WorkflowStatus
from sayiir_django.client import DjangoWorkflowClient, get_client
from sayiir_django.conf import sayiir_settings
from sayiir_django.health import health_problems


class Command(BaseCommand):
    help = "Durable workflows: run a worker, list and steer instances, check the setup."

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = sayiir_settings()
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        add = _with_django_options(actions.add_parser)

        worker = add("worker", help="run the workflows of every app's workflows.py")
        worker.add_argument(
            "--concurrency", type=_positive_int, default=defaults.worker_concurrency
        )
        worker.add_argument(
            "--max-steps", type=_positive_int, default=None, help="stop after this many steps"
        )
        worker.add_argument("--poll-interval", type=_positive_float, default=defaults.poll_interval)
        worker.add_argument("--claim-ttl", type=_positive_float, default=defaults.claim_ttl)
        worker.add_argument("--worker-id", default=None)
        worker.add_argument(
            "--workflow", action="append", default=None, help="only this workflow id (repeatable)"
        )

        listing = add("list", help="instances, newest first")
        listing.add_argument("--status", default=None, choices=_status_choices())
        listing.add_argument("--workflow", default=None)
        listing.add_argument("--limit", type=_positive_int, default=50)

        for name, text in (("status", "an instance's status"), ("history", "its history")):
            add(name, help=text).add_argument("instance_id")

        signal = add("signal", help="send a signal (JSON payload)")
        signal.add_argument("instance_id")
        signal.add_argument("name")
        signal.add_argument("payload", nargs="?", default="null", help="JSON (default null)")

        for name in ("cancel", "pause"):
            control = add(name, help=f"{name} an instance")
            control.add_argument("instance_id")
            control.add_argument("--reason", default=None)
        add("unpause", help="make a paused instance runnable").add_argument("instance_id")

        retry = add("retry-from", help="run an instance again from a step")
        retry.add_argument("instance_id")
        retry.add_argument("step", help="the task id to run again, with everything after it")

        add("healthcheck", help="the database answers and is migrated")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"_{action.replace('-', '_')}")(options)
        except (WorkflowError, ValueError, LookupError) as exc:
            raise CommandError(str(exc)) from exc

    # -- actions ------------------------------------------------------------------------

    def _worker(self, options: dict[str, Any]) -> None:
        from sayiir_django.registry import registry
        from sayiir_django.worker import WorkerOptions, run_worker

        found = registry()
        if found.failures:
            failure = found.failures[0]
            raise CommandError(f"{failure.module} failed to import:\n{failure.traceback}")
        workflows = list(found.workflows.values())
        if options["workflow"]:
            unknown = set(options["workflow"]) - set(found.workflows)
            if unknown:
                raise CommandError(f"unknown workflow id(s): {', '.join(sorted(unknown))}")
            workflows = [found.workflows[wf_id] for wf_id in options["workflow"]]
        if not workflows:
            raise CommandError("no workflows: define them in an installed app's workflows.py")
        code = run_worker(
            workflows,
            WorkerOptions(
                using=sayiir_settings().database,
                concurrency=options["concurrency"],
                poll_interval=options["poll_interval"],
                claim_ttl=options["claim_ttl"],
                worker_id=options["worker_id"],
                max_steps=options["max_steps"],
            ),
        )
        if code:
            raise SystemExit(code)

    def _list(self, options: dict[str, Any]) -> None:
        page = _client().list_instances(
            status=options["status"], workflow_id=options["workflow"], limit=options["limit"]
        )
        rows = [
            (item.instance_id or "", item.workflow_id or "", item.status, _when(item))
            for item in page
        ]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_LIST_HEADER)]
        for row in [_LIST_HEADER, *rows]:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        if page.next_cursor is not None:
            self.stdout.write(f"(more: raise --limit above {options['limit']})")

    def _status(self, options: dict[str, Any]) -> None:
        self._show(_client().status(options["instance_id"]))

    def _history(self, options: dict[str, Any]) -> None:
        for event in _client().history(options["instance_id"]):
            parts = [f"{event.seq:>4}", _clock(event.at), event.kind]
            if event.step_key:
                parts.append(event.step_key)
            if event.attempt:
                parts.append(f"attempt {event.attempt}")
            if event.worker_id:
                parts.append(f"by {event.worker_id}")
            if event.detail:
                parts.append(json.dumps(dict(event.detail), default=str))
            self.stdout.write("  ".join(parts))

    def _signal(self, options: dict[str, Any]) -> None:
        try:
            payload = json.loads(options["payload"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"the payload is not JSON: {exc}") from exc
        _client().send_signal(options["instance_id"], options["name"], payload)
        self.stdout.write(f"signal {options['name']!r} sent to {options['instance_id']}")

    def _cancel(self, options: dict[str, Any]) -> None:
        status = _client().cancel(
            options["instance_id"], reason=options["reason"], cancelled_by="manage.py sayiir"
        )
        self._show(status)

    def _pause(self, options: dict[str, Any]) -> None:
        status = _client().pause(
            options["instance_id"], reason=options["reason"], paused_by="manage.py sayiir"
        )
        self._show(status)

    def _unpause(self, options: dict[str, Any]) -> None:
        self._show(_client().unpause(options["instance_id"]))

    def _retry_from(self, options: dict[str, Any]) -> None:
        self._show(_client().retry_from(options["instance_id"], options["step"]))

    def _healthcheck(self, options: dict[str, Any]) -> None:
        problems = health_problems(sayiir_settings().database)
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write("ok: the database answers and sayiir_django's migrations are applied")

    def _show(self, status: WorkflowStatus) -> None:
        self.stdout.write(f"{status.instance_id}: {status.status}")
        for name in ("workflow_id", "reason", "cancelled_by", "paused_by", "signal_name", "error"):
            value = getattr(status, name)
            if value is not None:
                self.stdout.write(f"  {name}: {value}")
        if status.output is not None:
            self.stdout.write(f"  output: {json.dumps(status.output, default=str)}")


_LIST_HEADER = ("INSTANCE", "WORKFLOW", "STATUS", "UPDATED")


def _with_django_options(
    add_parser: Callable[..., ArgumentParser],
) -> Callable[..., ArgumentParser]:
    """Let every action take manage.py's own options after its arguments too.

    ``manage.py sayiir worker --settings x`` would otherwise fail: the options after an
    action go to the action's parser. Their defaults are SUPPRESS, so the values given
    before the action (or the defaults) stand unless repeated after it.
    """

    def add(name: str, **kwargs: Any) -> ArgumentParser:
        action = add_parser(name, **kwargs)
        for flags, extra in _DJANGO_OPTIONS:
            action.add_argument(*flags, default=SUPPRESS, help=SUPPRESS, **extra)
        return action

    return add


_DJANGO_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-v", "--verbosity"), {"type": int, "choices": [0, 1, 2, 3]}),
    (("--settings",), {}),
    (("--pythonpath",), {}),
    (("--traceback",), {"action": "store_true"}),
    (("--no-color",), {"action": "store_true"}),
    (("--force-color",), {"action": "store_true"}),
    (("--skip-checks",), {"action": "store_true"}),
]


def _client() -> DjangoWorkflowClient:
    return get_client()


def _when(status: WorkflowStatus) -> str:
    moment = status.updated_at or status.created_at
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def _clock(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _status_choices() -> list[str]:
    return sorted({status.value for status in Status} | {status.reported for status in Status})


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be > 0, not {value}")
    return value
