"""One trace from the submitting span to every step, across a real worker process.

The test submits inside a span; a ``Worker`` in a subprocess (its own SDK provider,
exporting spans to a JSON-lines file) claims and runs the instance. Only the trace
context stored with the instance can link the two processes' spans.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import trace
from telemetry_capture import installed

from sayiir_core import AsyncWorkflowClient, PostgresBackend, SqliteBackend

REPO_ROOT = Path(__file__).resolve().parents[2]

FLOW_SOURCE = """
from opentelemetry import trace

from sayiir_core import Flow


def prepare(value):
    with trace.get_tracer("user").start_as_current_span("user work"):
        return value + 1


async def finish(value):
    return value * 10


WORKFLOW = Flow("traced").then(prepare).then(finish).build()
"""

WORKER_SOURCE = """
import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from sayiir_core import AsyncWorkflowClient, PostgresBackend, SqliteBackend, Worker

kind, location, schema, spans_path, instance_id = sys.argv[1:6]
from traced_flow import WORKFLOW


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(spans_path, "a") as out:
            for span in spans:
                out.write(json.dumps({
                    "name": span.name,
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "parent_id": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes),
                }) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)


async def main():
    if kind == "sqlite":
        backend = SqliteBackend(location)
    else:
        backend = PostgresBackend(location, schema=schema, max_size=2)
    async with backend:
        stop = asyncio.Event()
        worker = Worker("proc-worker", backend, poll_interval=0.05)
        running = asyncio.create_task(worker.run([WORKFLOW], stop=stop))
        client = AsyncWorkflowClient(backend)
        status = await client.wait(instance_id, timeout=60, poll_interval=0.05)
        stop.set()
        await running
        print(status.status, status.output)


asyncio.run(main())
provider.shutdown()
"""


def _load_flow(directory: Path) -> ModuleType:
    path = directory / "traced_flow.py"
    path.write_text(FLOW_SOURCE)
    spec = importlib.util.spec_from_file_location("traced_flow_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _submit_and_run_elsewhere(
    tmp_path: Path, backend: SqliteBackend | PostgresBackend, argv: list[str]
) -> tuple[list[dict[str, Any]], Any, str]:
    flow = _load_flow(tmp_path)
    script = tmp_path / "worker_process.py"
    script.write_text(textwrap.dedent(WORKER_SOURCE))
    spans_path = tmp_path / "spans.jsonl"
    with installed() as captured:
        async with backend:
            with trace.get_tracer("web").start_as_current_span("POST /orders") as request:
                await AsyncWorkflowClient(backend).submit(flow.WORKFLOW, "order-1", 4)
            environment = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
            done = subprocess.run(  # noqa: ASYNC221 - the test waits for the worker on purpose
                [sys.executable, str(script), *argv, str(spans_path), "order-1"],
                capture_output=True,
                text=True,
                timeout=90,
                env=environment,
                check=False,
            )
        assert done.returncode == 0, done.stderr
        assert captured.named("workflow ") == []  # nothing of the run happened here
    spans = [json.loads(line) for line in spans_path.read_text().splitlines()]
    return spans, request.get_span_context(), done.stdout


def _check_one_trace(spans: list[dict[str, Any]], request: Any, stdout: str) -> None:
    assert stdout.split() == ["completed", "50"]
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"workflow traced", "step prepare", "step finish", "user work"}
    assert {span["trace_id"] for span in spans} == {request.trace_id}
    instance = by_name["workflow traced"]
    assert instance["parent_id"] == request.span_id
    assert instance["attributes"]["sayiir.worker.id"] == "proc-worker"
    assert instance["attributes"]["sayiir.outcome"] == "completed"
    for step in ("step prepare", "step finish"):
        assert by_name[step]["parent_id"] == instance["span_id"]
        assert by_name[step]["attributes"]["sayiir.instance.id"] == "order-1"
    assert by_name["user work"]["parent_id"] == by_name["step prepare"]["span_id"]


async def test_sqlite_worker_process_continues_the_submitters_trace(tmp_path: Path) -> None:
    database = tmp_path / "flows.db"
    spans, request, stdout = await _submit_and_run_elsewhere(
        tmp_path, SqliteBackend(str(database)), ["sqlite", str(database), "-"]
    )
    _check_one_trace(spans, request, stdout)


@pytest.mark.postgres
async def test_postgres_worker_process_continues_the_submitters_trace(
    tmp_path: Path, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    spans, request, stdout = await _submit_and_run_elsewhere(
        tmp_path, PostgresBackend(url, schema=schema, max_size=2), ["postgres", url, schema]
    )
    _check_one_trace(spans, request, stdout)
