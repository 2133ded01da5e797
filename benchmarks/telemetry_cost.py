"""What telemetry costs a step, in CPU instructions (callgrind), for docs/howto/observability.md.

S1 with no persistence: ``run_workflow`` of a 10-step chain of trivial sync steps, the
path where any overhead shows most. Each setup runs under ``valgrind --tool=callgrind``
twice, for 20 and for 120 runs in one process; the difference over 1,000 steps is the
cost per step, without start-up and imports. Instruction counts do not depend on the
machine's load, so figures taken on a busy machine are still comparable.

    python benchmarks/telemetry_cost.py            # every setup (about 3 minutes)
    python benchmarks/telemetry_cost.py off on     # some of them

Setups: ``off`` (OpenTelemetry never imported), ``api`` (imported, no provider set),
``metrics``, ``traces``, ``on`` (both), ``sampled`` (both, traces sampled at 0.1).
"SDK providers" are an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` whose
exporter discards the spans (no encoding, no network counted) and an SDK
``MeterProvider`` with an in-memory reader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETUPS = ("off", "api", "metrics", "traces", "on", "sampled")
STEPS = 10
FEW, MANY = 20, 120


def _install(setup: str) -> None:
    if setup == "off":
        return
    from opentelemetry import metrics, trace

    if setup == "api":
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if setup in ("traces", "on", "sampled"):
        sampler = ParentBased(TraceIdRatioBased(0.1)) if setup == "sampled" else None
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
    if setup in ("metrics", "on", "sampled"):
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _run(setup: str, runs: int) -> None:
    """The measured process: ``runs`` runs after a few to warm up."""
    _install(setup)
    from sayiir_core import Flow, run_workflow

    def inc(x: int) -> int:
        return x + 1

    flow = Flow("telemetry_cost")
    for i in range(STEPS):
        flow = flow.then(inc, name=f"step_{i}")
    workflow = flow.build()
    for _ in range(5):
        assert run_workflow(workflow, 0) == STEPS
    for _ in range(runs):
        run_workflow(workflow, 0)


def _instructions(setup: str, runs: int, folder: Path) -> int:
    out = folder / f"{setup}.{runs}.out"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--run",
            setup,
            str(runs),
        ],
        check=True,
        capture_output=True,
    )
    found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def main(setups: list[str]) -> None:
    unknown = set(setups) - set(SETUPS)
    if unknown:
        raise SystemExit(f"unknown setups {sorted(unknown)}; choose from {SETUPS}")
    per_step: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for setup in setups:
            few = _instructions(setup, FEW, Path(folder))
            many = _instructions(setup, MANY, Path(folder))
            per_step[setup] = (many - few) / ((MANY - FEW) * STEPS)
    base = per_step.get("off")
    print("| setup | instructions per step | vs. off |\n|---|---|---|")
    for setup, cost in per_step.items():
        versus = f"{cost / base - 1:+.1%}" if base else "—"
        print(f"| {setup} | {cost / 1e6:.3f} M | {versus} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        _run(sys.argv[2], int(sys.argv[3]))
    else:
        os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts every run
        main(sys.argv[1:] or list(SETUPS))
