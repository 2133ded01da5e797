"""One trace from the submitting span to every step a real ``celery worker`` runs.

The test process submits a fork/join instance inside a span (an SDK provider with an
in-memory exporter); a ``celery worker`` process, with its own SDK provider writing
finished spans to a JSON-lines file, runs the steps. Only the trace context stored
with the instance at submit can link the two processes' spans: each step span must
carry the submitter's trace id and hang under a ``workflow`` span of its message, itself
a child of the submitting span (see docs/howto/observability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

from celery_fleet import HERE, Fleet, wait_until
from opentelemetry import trace
from telemetry_capture import installed

TELEMETRY_APP = """
import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from bridge_app import app, bridge  # noqa: F401  (the worker's Celery app and bridge)

SPANS = os.environ["TELEMETRY_SPANS"]


class FileExporter(SpanExporter):
    def export(self, spans):
        lines = []
        for span in spans:
            parent = span.parent
            lines.append(json.dumps({
                "name": span.name,
                "trace_id": span.context.trace_id,
                "span_id": span.context.span_id,
                "parent_id": parent.span_id if parent is not None else None,
                "attributes": dict(span.attributes or {}),
                "pid": os.getpid(),
            }) + "\\n")
        fd = os.open(SPANS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


# Set before the pool forks: every pool process inherits it (no exporter thread).
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)
"""


def _start_traced_worker(fleet: Fleet, tmp_path: Path, spans: Path) -> None:
    (tmp_path / "telemetry_app.py").write_text(textwrap.dedent(TELEMETRY_APP))
    env = fleet.env(BRIDGE_WORKER="traced", TELEMETRY_SPANS=str(spans))
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "telemetry_app",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname=traced@%h",
    ]
    with (tmp_path / "traced.out").open("wb") as out:
        process = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    fleet.processes.append(process)  # stopped by the fixture
    wait_until(
        lambda: (
            any(line.startswith("ready traced ") for line in fleet.lines())
            or process.poll() is not None
        ),
        60,
        "the traced worker to be ready",
    )
    assert process.poll() is None, (tmp_path / "traced.out").read_text(errors="replace")


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_celery_step_spans_continue_the_submitters_trace(
    fleet: Fleet, app_module: ModuleType, tmp_path: Path
) -> None:
    spans_path = tmp_path / "spans.jsonl"
    _start_traced_worker(fleet, tmp_path, spans_path)
    client = app_module.bridge.client
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("submit") as submit:
            client.submit(app_module.fork_join, "traced-1", {"n": 3})
        assert client.result("traced-1", timeout=60) == 330
        submitted_here = captured.spans()
    context = submit.get_span_context()
    step_names = {"step start", "step left", "step right", "step total"}

    def all_steps_exported() -> bool:
        return step_names <= {span["name"] for span in _spans(spans_path)}

    wait_until(all_steps_exported, 30, "the worker's step spans")
    _assert_one_workflow_span_per_step(
        _spans(spans_path), context, "fork_join", "traced-1", step_names
    )
    # The submitting process ran no step: its only spans are the test's own.
    assert [span.name for span in submitted_here] == ["submit"]


def test_each_step_of_a_continued_chain_keeps_its_own_workflow_span(
    fleet: Fleet, app_module: ModuleType, tmp_path: Path
) -> None:
    """Steps a task runs one after the other (chain continuation) are traced as if each
    came in its own message: a ``workflow`` span each, under the submitting span."""
    spans_path = tmp_path / "spans.jsonl"
    _start_traced_worker(fleet, tmp_path, spans_path)
    client = app_module.bridge.client
    with installed():
        with trace.get_tracer("test").start_as_current_span("submit") as submit:
            client.submit(app_module.chain10, "traced-chain", 0)
        assert client.result("traced-chain", timeout=60) == 10
    step_names = {f"step bump{n}" for n in range(10)}

    def all_steps_exported() -> bool:
        return step_names <= {span["name"] for span in _spans(spans_path)}

    wait_until(all_steps_exported, 30, "the worker's step spans")
    _assert_one_workflow_span_per_step(
        _spans(spans_path), submit.get_span_context(), "chain10", "traced-chain", step_names
    )
    published = [line for line in fleet.lines() if line.startswith("publish ")]
    assert len(published) < 10  # the chain went on in the tasks that ran its steps


def _assert_one_workflow_span_per_step(
    exported: list[dict[str, Any]],
    context: trace.SpanContext,
    workflow_id: str,
    instance_id: str,
    step_names: set[str],
) -> None:
    steps = [span for span in exported if span["name"].startswith("step ")]
    # One workflow span per step, as a worker has one per run of an instance.
    advances = {
        span["span_id"]: span for span in exported if span["name"] == f"workflow {workflow_id}"
    }
    assert {span["name"] for span in steps} == step_names
    assert len(advances) == len(steps)
    for advance in advances.values():
        assert advance["trace_id"] == context.trace_id, advance
        assert advance["parent_id"] == context.span_id, advance
        assert advance["attributes"]["sayiir.instance.id"] == instance_id
        assert advance["attributes"]["sayiir.outcome"] == "ran"
    for span in steps:
        assert span["trace_id"] == context.trace_id, span
        advance = advances[span["parent_id"]]  # the step hangs under its own workflow span
        assert advance["attributes"]["sayiir.step.key"] == span["attributes"]["sayiir.task.id"]
        assert advance["pid"] == span["pid"]
        attributes = span["attributes"]
        assert attributes["sayiir.instance.id"] == instance_id
        assert attributes["sayiir.workflow.id"] == workflow_id
        assert attributes["sayiir.outcome"] == "completed"
        assert str(attributes["sayiir.worker.id"])  # the dispatcher's owner id
