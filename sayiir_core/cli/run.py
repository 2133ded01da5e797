"""``sayiir run``, ``resume`` and ``submit``: start or continue instances.

``run`` and ``resume`` execute the steps in this process and print one line per durable
event as it is written; ``submit`` only stores the instance for a worker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from sayiir_core.backends.base import HistoryEvent
from sayiir_core.backends.url import backend_from_url, redact
from sayiir_core.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    database_url,
    new_instance_id,
    parse_json_option,
    print_status,
    say,
    suggest,
    with_client,
)
from sayiir_core.cli.output import (
    QUIET_KINDS,
    clock_time,
    describe_event,
    local_time,
    symbols_for,
)
from sayiir_core.cli.targets import awaited_signal_names, load_workflow
from sayiir_core.runtime.durable_runner import DurableRunner
from sayiir_core.runtime.executor import LocalExecutor
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.workflow import Workflow


def cmd_run(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    input_value = parse_json_option(args.input, "--input")
    instance_id: str = args.instance_id or new_instance_id(workflow)
    say(args, f"Running {workflow.workflow_id} as {instance_id} on {redact(database_url(args))}")
    policy: str = args.conflict_policy
    return _run_here(
        args,
        workflow,
        instance_id,
        lambda runner: runner.run(workflow, instance_id, input_value, conflict_policy=policy),
    )


def cmd_resume(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    instance_id: str = args.instance_id
    allow_change: bool = args.allow_definition_change
    say(args, f"Resuming {instance_id} ({workflow.workflow_id}) on {redact(database_url(args))}")
    return _run_here(
        args,
        workflow,
        instance_id,
        lambda runner: runner.resume(workflow, instance_id, allow_definition_change=allow_change),
    )


def _run_here(
    args: argparse.Namespace,
    workflow: Workflow,
    instance_id: str,
    start: Callable[[DurableRunner], Awaitable[WorkflowStatus]],
) -> int:
    """Run in this process with one live line per durable event, then report."""
    stream = sys.stderr if args.json else sys.stdout
    marks = symbols_for(stream)

    def show(_instance_id: str, event: HistoryEvent) -> None:
        if event.kind not in QUIET_KINDS:
            print(
                f"  {clock_time(event.at)}  {describe_event(event, marks)}", file=stream, flush=True
            )

    backend = backend_from_url(database_url(args))
    # The runner's executor: ours, so closed below.
    executor = LocalExecutor()

    async def go() -> tuple[WorkflowStatus, list[str]]:
        try:
            status = await start(DurableRunner(backend, executor=executor, on_event=show))
            signals = []
            if status.is_awaiting_signal():
                signals = await awaited_signal_names(workflow, instance_id, backend)
            return status, signals
        finally:
            await backend.close()

    try:
        status, signals = run_sync(go())
    except KeyboardInterrupt:
        raise CliError(
            f"interrupted; {instance_id} keeps its checkpoints. Continue with: "
            + suggest(args, "resume", args.target, instance_id).strip(),
            EXIT_INTERRUPTED,
        ) from None
    finally:
        executor.close()
    print_status(args, status)
    for line in _next_steps(args, status, signals):
        say(args, line)
    return EXIT_ERROR if status.is_failed() or status.is_cancelled() else EXIT_OK


def _next_steps(args: argparse.Namespace, status: WorkflowStatus, signals: list[str]) -> list[str]:
    """What to type next when a run stops short of completing."""
    instance_id = status.instance_id or args.instance_id
    resume = suggest(args, "resume", args.target, instance_id)
    worker = "or leave it to a worker:\n" + suggest(args, "worker", args.target)
    if status.is_awaiting_signal():
        names = [status.signal_name] if status.signal_name else signals
        name = names[0] if len(names) == 1 else "NAME"
        send = suggest(args, "signal", instance_id, name, "--payload", "JSON")
        return [
            "",
            f"{instance_id} is parked awaiting {_signal_phrase(names)}. Send it, then resume:",
            send,
            resume,
            worker,
        ]
    if status.is_waiting():
        until = local_time(status.wake_at) or "its timer"
        return [
            "",
            f"{instance_id} is parked until {until}. After that, resume it:",
            resume,
            worker,
        ]
    if status.is_paused():
        return [
            "",
            f"{instance_id} is paused. Unpause, then resume it:",
            suggest(args, "unpause", instance_id),
            resume,
        ]
    if Status(status.status) is Status.PENDING:
        return ["", f"{instance_id} waits for a worker (in_progress). Run it here:", resume, worker]
    if status.status == Status.RUNNING:
        return ["", f"{instance_id} is being run by another process."]
    if status.is_failed() and status.failed_task_id:
        return [
            "",
            "To re-run from the failed step once it is fixed:",
            suggest(args, "retry-from", instance_id, status.failed_task_id),
            resume,
        ]
    return []


def _signal_phrase(names: list[str]) -> str:
    if len(names) == 1:
        return f"signal {names[0]!r}"
    if names:
        return "one of the signals " + ", ".join(repr(name) for name in names)
    return "a signal"


def cmd_submit(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    input_value = parse_json_option(args.input, "--input")
    instance_id: str = args.instance_id or new_instance_id(workflow)
    status = with_client(
        args,
        lambda client: client.submit(workflow, instance_id, input_value),
        conflict_policy=args.conflict_policy,
        may_create=True,
    )
    print_status(args, status)
    say(args, "\nA worker runs it:\n" + suggest(args, "worker", args.target))
    say(args, "Wait for its result:\n" + suggest(args, "wait", status.instance_id or "?"))
    return EXIT_OK
