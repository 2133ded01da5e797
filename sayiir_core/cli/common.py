"""Plumbing shared by the ``sayiir`` commands: options, the database, printing.

Human text goes to stdout, or to stderr under ``--json`` so stdout stays one JSON
document a script can parse.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sayiir_core.backends.url import backend_from_url, redact, sqlite_path
from sayiir_core.cli.output import status_block, status_document, to_json
from sayiir_core.client import AsyncWorkflowClient
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import WorkflowStatus
from sayiir_core.workflow.workflow import Workflow

T = TypeVar("T")

ENV_DATABASE_URL = "SAYIIR_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///sayiir.db"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An error to report as one line, with the exit code it deserves."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_json_option(text: str | None, option: str) -> Any:
    """The value of a JSON option; ``@path`` reads a file and ``@-`` standard input."""
    if text is None:
        return None
    source = text
    if text.startswith("@"):  # no JSON document starts with "@", so this is unambiguous
        location = text[1:]
        try:
            source = sys.stdin.read() if location == "-" else Path(location).read_text("utf-8")
        except OSError as exc:
            message = f"{option}: cannot read {location!r}: {exc.strerror}"
            raise CliError(message, EXIT_USAGE) from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON ({exc}); quote it for the shell, e.g. "
            f"{option} '{{\"id\": 1}}'",
            EXIT_USAGE,
        ) from None


def database_url(args: argparse.Namespace) -> str:
    url: str | None = args.db or os.environ.get(ENV_DATABASE_URL)
    return url or DEFAULT_DATABASE_URL


def say(args: argparse.Namespace, text: str = "") -> None:
    """Human text: stdout, or stderr when stdout is reserved for ``--json``."""
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def suggest(args: argparse.Namespace, *words: str) -> str:
    """A command line to run next, carrying ``--db`` when the user passed one."""
    extra = ["--db", args.db] if args.db else []
    return "  " + shlex.join(["sayiir", *words, *extra])


def with_client(
    args: argparse.Namespace,
    action: Callable[[AsyncWorkflowClient], Awaitable[T]],
    conflict_policy: str | None = None,
    *,
    may_create: bool = False,
    workflows: Sequence[Workflow] = (),
) -> T:
    """Run ``action`` with a client on the process's loop thread, then close the backend.

    Only commands that store something (``submit``) pass ``may_create``: opening a SQLite
    file creates it, and an inspect or control command aimed at a mistyped path must say
    so instead of answering from a new, empty database. ``workflows``: the client knows
    them (it refuses signals they never wait for).
    """
    url = database_url(args)
    if not may_create:
        require_existing_database(url)
    backend = backend_from_url(url)

    async def go() -> T:
        try:
            client = AsyncWorkflowClient(
                backend, conflict_policy=conflict_policy, workflows=workflows
            )
            return await action(client)
        finally:
            await backend.close()

    return run_sync(go())


def require_existing_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist (other backends are servers)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise CliError(
            f"no database at {str(path)!r} (from {redact(url)!r}): check --db or "
            f"${ENV_DATABASE_URL}; 'sayiir run', 'submit' and 'worker' create one"
        )


def print_status(args: argparse.Namespace, status: WorkflowStatus) -> None:
    print(to_json(status_document(status)) if args.json else status_block(status), flush=True)


def new_instance_id(workflow: Workflow) -> str:
    """``<workflow id>-<8 hex digits>``: readable in lists, unique enough for one database."""
    return f"{workflow.workflow_id}-{uuid.uuid4().hex[:8]}"
