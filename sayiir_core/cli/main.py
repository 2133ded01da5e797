"""The ``sayiir`` command line: run, resume, inspect and control workflow instances.

::

    sayiir run flows:orders --input '{"id": 1}'     run here, showing each step
    sayiir submit flows:orders --input '{"id": 1}'  store it for a worker
    sayiir worker flows:orders                       serve instances from the database
    sayiir status|history ID, sayiir list            inspect
    sayiir wait ID [--timeout SECONDS]               block until it has finished
    sayiir signal|cancel|pause|unpause|retry-from    control

The database is ``--db URL``, else ``$SAYIIR_DATABASE_URL``, else ``sqlite:///sayiir.db``
in the current directory. Exit codes: 0 success (a run that parks on a delay or a signal
included), 1 a failed or cancelled run (or waited-for instance) or any error, 2 a usage
error, 130 interrupted.
Errors are one ``error: ...`` line on stderr, never a traceback.

Modules of ``sayiir_core.cli``: ``main`` (entry point, arguments, inspect and control
commands), ``run`` (run, resume, submit), ``worker``, ``targets`` (``module:attr``
loading), ``output`` (tables, JSON, event lines) and ``common``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from sayiir_core import __version__
from sayiir_core.backends.base import ConflictPolicy
from sayiir_core.cli.common import (
    DEFAULT_DATABASE_URL,
    ENV_DATABASE_URL,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    parse_json_option,
    print_status,
    say,
    suggest,
    with_client,
)
from sayiir_core.cli.output import (
    event_document,
    history_table,
    instance_table,
    status_document,
    to_json,
)
from sayiir_core.cli.run import cmd_resume, cmd_run, cmd_submit
from sayiir_core.cli.targets import TargetError, load_workflow
from sayiir_core.cli.worker import cmd_worker
from sayiir_core.client import AsyncWorkflowClient
from sayiir_core.errors import WorkflowError
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.workflow import Workflow

T = TypeVar("T")


# -- entry point --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting (tests call this)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version and usage errors
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.command_function
    try:
        return command(args)
    except CliError as exc:
        return _fail(args, exc, exc.exit_code)
    except (WorkflowError, TargetError, ValueError, TypeError) as exc:
        # ValueError, TypeError: the library's argument checks (e.g. an empty instance id).
        return _fail(args, exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail(args, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `sayiir list | head`: the reader left; stay quiet, also when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _fail(args: argparse.Namespace, error: BaseException, exit_code: int) -> int:
    """One ``error: ...`` line on stderr; under ``--json`` also an error document on stdout.

    A script that parses stdout then always gets JSON, failure included.
    """
    message = " ".join(str(error).split())
    if getattr(args, "json", False):
        kind = "CliError" if isinstance(error, CliError) else type(error).__name__
        print(to_json({"error": {"type": kind, "message": message, "exit_code": exit_code}}))
    print(f"error: {message}", file=sys.stderr)
    return exit_code


# -- arguments ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sayiir",
        description="Run, inspect and control durable Sayiir workflows.",
        epilog=f"database: --db URL, else ${ENV_DATABASE_URL}, else {DEFAULT_DATABASE_URL}",
    )
    parser.add_argument("--version", action="version", version=f"sayiir {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--db",
        metavar="URL",
        help=f"backend URL (default: ${ENV_DATABASE_URL} or {DEFAULT_DATABASE_URL})",
    )
    json_output = argparse.ArgumentParser(add_help=False)
    json_output.add_argument("--json", action="store_true", help="print JSON on stdout")

    def add(
        name: str,
        function: Callable[[argparse.Namespace], int],
        summary: str,
        *,
        with_json: bool = True,
    ) -> argparse.ArgumentParser:
        parents = [database, json_output] if with_json else [database]
        sub = commands.add_parser(name, parents=parents, help=summary, description=summary)
        sub.set_defaults(command_function=function, json=False)
        return sub

    _add_start_arguments(add("run", cmd_run, "Run a workflow here, checkpointing every step."))
    sub = add("resume", cmd_resume, "Continue an instance from its last checkpoint, here.")
    sub.add_argument("target", metavar="MODULE:ATTR", help="the workflow, e.g. flows:orders")
    sub.add_argument("instance_id", metavar="INSTANCE_ID")
    sub.add_argument(
        "--allow-definition-change",
        action="store_true",
        help="resume even if the workflow's structure changed since it started",
    )
    _add_start_arguments(add("submit", cmd_submit, "Store a new instance for a worker to run."))
    _add_worker_arguments(
        add("worker", cmd_worker, "Serve instances from the database.", with_json=False)
    )
    add("status", cmd_status, "Show an instance's status.").add_argument("instance_id")
    sub = add("wait", cmd_wait, "Wait until an instance has finished; show its final status.")
    sub.add_argument("instance_id")
    sub.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up after this long (exit code 1; the instance runs on); default: no limit",
    )
    _add_list_arguments(add("list", cmd_list, "List instances, newest first."))
    add("history", cmd_history, "Show an instance's event history.").add_argument("instance_id")
    sub = add("signal", cmd_signal, "Send a signal to an instance.")
    sub.add_argument("instance_id")
    sub.add_argument("signal_name", metavar="NAME")
    sub.add_argument("--payload", metavar="JSON", help="signal payload (JSON, or @file)")
    sub.add_argument(
        "--workflow",
        metavar="MODULE:ATTR",
        help="the instance's workflow (e.g. flows:orders): a name it never waits for is "
        "refused instead of buffered unread",
    )
    for name, function, verb in (("cancel", cmd_cancel, "Cancel"), ("pause", cmd_pause, "Pause")):
        sub = add(name, function, f"{verb} an instance (a running one at its next checkpoint).")
        sub.add_argument("instance_id")
        sub.add_argument("--reason", help="why, kept with the instance")
        sub.add_argument("--by", help="who, kept with the instance")
    add("unpause", cmd_unpause, "Make a paused instance runnable again.").add_argument(
        "instance_id"
    )
    sub = add("retry-from", cmd_retry_from, "Re-run an instance from a step, keeping earlier ones.")
    sub.add_argument("instance_id")
    sub.add_argument("task_id", metavar="TASK_ID")
    return parser


def _add_start_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("target", metavar="MODULE:ATTR", help="the workflow, e.g. flows:orders")
    sub.add_argument("--input", metavar="JSON", help="input: JSON or @file (default: null)")
    sub.add_argument(
        "--instance-id",
        metavar="ID",
        type=_instance_id,
        help="instance id (default: <workflow id>-<8 random hex digits>)",
    )
    sub.add_argument(
        "--conflict-policy",
        choices=[policy.value for policy in ConflictPolicy],
        default=ConflictPolicy.FAIL.value,
        help="when the instance id exists already (default: fail)",
    )


def _add_worker_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("targets", metavar="MODULE:ATTR", nargs="+", help="workflows to serve")
    sub.add_argument("--id", dest="worker_id", help="worker id (default: host:pid:random)")
    sub.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        help="instances run at once, and shared steps run at once (default: 8)",
    )
    sub.add_argument(
        "--no-share-steps",
        dest="share_steps",
        action="store_false",
        help="run all parallel steps of an instance here instead of sharing them",
    )
    sub.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="idle wait before looking for work again (default: 1.0)",
    )
    sub.add_argument(
        "--claim-ttl",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="lease on a claimed instance, renewed every third (default: 300)",
    )
    sub.add_argument(
        "--grace",
        type=_non_negative_float,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, let running steps finish for at most this long, then "
        "cancel them and release their claims so another worker runs them at once "
        "(default: wait for them however long they take)",
    )


def _add_list_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--status", choices=[status.reported for status in Status])
    sub.add_argument("--workflow", metavar="WORKFLOW_ID", help="only this workflow's instances")
    sub.add_argument("--limit", type=_positive_int, default=50, help="page size (default: 50)")
    sub.add_argument("--cursor", help="the next cursor printed by the previous page")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    return _require_positive(value)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return _require_positive(value)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _require_positive(value: T) -> T:
    if not isinstance(value, int | float) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _instance_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "must not be empty; leave --instance-id out for a generated id"
        )
    return text


# -- inspect ------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    print_status(args, with_client(args, lambda client: client.status(instance_id)))
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    status = with_client(args, lambda client: client.wait(instance_id, timeout=args.timeout))
    print_status(args, status)
    return EXIT_ERROR if status.is_failed() or status.is_cancelled() else EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    page = with_client(
        args,
        lambda client: client.list_instances(
            status=args.status, workflow_id=args.workflow, limit=args.limit, cursor=args.cursor
        ),
    )
    if args.json:
        items = [status_document(item) for item in page]
        print(to_json({"items": items, "next_cursor": page.next_cursor}))
        return EXIT_OK
    print(instance_table(page) if page else "no instances")
    if page.next_cursor is not None:
        print(f"\nnext cursor: {page.next_cursor}")
        again = [*_list_filters(args), "--cursor", page.next_cursor]
        print("next page:  " + suggest(args, "list", *again).strip())
    return EXIT_OK


def _list_filters(args: argparse.Namespace) -> list[str]:
    words = ["--limit", str(args.limit)]
    if args.status:
        words += ["--status", args.status]
    if args.workflow:
        words += ["--workflow", args.workflow]
    return words


def cmd_history(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    events = with_client(args, lambda client: client.history(instance_id))
    if args.json:
        document = {"instance_id": instance_id, "events": [event_document(e) for e in events]}
        print(to_json(document))
    else:
        print(history_table(events))
    return EXIT_OK


# -- control ------------------------------------------------------------------------


def cmd_signal(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    name: str = args.signal_name
    payload = parse_json_option(args.payload, "--payload")
    workflow = load_workflow(args.workflow) if args.workflow else None

    async def send(client: AsyncWorkflowClient) -> WorkflowStatus:
        if workflow is not None:
            _require_workflow_of(await client.status(instance_id), workflow)
        # Knowing the workflow, the client refuses a name it never waits for
        # (UnknownSignalError, listing the names it does wait for).
        await client.send_signal(instance_id, name, payload)
        return await client.status(instance_id)

    status = with_client(args, send, workflows=[workflow] if workflow is not None else [])
    say(args, f"Signal {name!r} sent to {instance_id}.")
    print_status(args, status)
    _continue_hint(args, status)
    return EXIT_OK


def _require_workflow_of(status: WorkflowStatus, workflow: Workflow) -> None:
    """``--workflow`` must name the instance's workflow, or it checks nothing."""
    if status.workflow_id != workflow.workflow_id:
        raise CliError(
            f"instance {status.instance_id!r} is an instance of workflow "
            f"{status.workflow_id!r}, not of {workflow.workflow_id!r} (--workflow)"
        )


def cmd_cancel(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    status = with_client(
        args, lambda client: client.cancel(instance_id, reason=args.reason, cancelled_by=args.by)
    )
    return _report_control(args, status, "cancelled", "Cancel")


def cmd_pause(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    status = with_client(
        args, lambda client: client.pause(instance_id, reason=args.reason, paused_by=args.by)
    )
    return _report_control(args, status, "paused", "Pause")


def _report_control(args: argparse.Namespace, status: WorkflowStatus, done: str, verb: str) -> int:
    if status.status == done:
        say(args, f"{status.instance_id} is {done}.")
    else:
        # Someone holds a live claim: the request waits for the next checkpoint.
        say(
            args,
            f"{verb} requested: {status.instance_id} is {status.status} and will be "
            f"{done} at its next checkpoint.",
        )
    print_status(args, status)
    return EXIT_OK


def cmd_unpause(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    status = with_client(args, lambda client: client.unpause(instance_id))
    say(args, f"{instance_id} is runnable again.")
    print_status(args, status)
    _continue_hint(args, status)
    return EXIT_OK


def cmd_retry_from(args: argparse.Namespace) -> int:
    instance_id: str = args.instance_id
    task_id: str = args.task_id
    status = with_client(args, lambda client: client.retry_from(instance_id, task_id))
    say(args, f"{instance_id} will run again from {task_id!r}; earlier checkpoints are kept.")
    print_status(args, status)
    _continue_hint(args, status)
    return EXIT_OK


def _continue_hint(args: argparse.Namespace, status: WorkflowStatus) -> None:
    """How to get a runnable instance going when no worker is serving its workflow."""
    if Status(status.status) in (Status.PENDING, Status.AWAITING_SIGNAL, Status.WAITING):
        say(
            args,
            f"\nUnless a worker serves {status.workflow_id!r}, continue it here with the "
            f"module and attribute that define {status.workflow_id!r} (e.g. flows:orders):",
        )
        say(args, suggest(args, "resume", "<module>:<attr>", status.instance_id or "?"))
