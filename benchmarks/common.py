"""Shared pieces of the benchmark suite: scenarios, timing, percentiles, results, table.

Every system module (``bench_ours``, ``bench_sayiir10``, ``bench_dbos``, ``bench_celery``,
``bench_floor``) builds the same shapes from the constants here and reports ``Result``
records; ``run.py`` renders them side by side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# -- scenarios -------------------------------------------------------------------------

SCENARIOS: dict[str, str] = {
    "S1": "chain of 10 steps, run one after another: per-step latency",
    "S2": "chain-of-10 workflows submitted at once, run by workers: steps/s",
    "S3": "fork into 10 branches and join, run one after another: per workflow",
    "S4": "3-step chain passing a 100 KB JSON payload: per step",
    "S5": "map over a list (1,000 items in a full run): per workflow",
    "S6": "one chain of 10 submitted to an idle worker: end-to-end latency",
    "S7": "map over a wide list (10,000 items in a full run): per workflow, ours only",
    "floor": "single-row upsert commit on the same database",
}
SCENARIO_ORDER = tuple(SCENARIOS)

CHAIN_LENGTH = 10
FORK_WIDTH = 10
PAYLOAD_STEPS = 3
PAYLOAD_BYTES = 100 * 1024
# How often a client looks at a submitted instance while waiting for it (S2, S6).
OBSERVE_INTERVAL = 0.001


def inc(x: int) -> int:
    """The step of every chain: trivial, so the figures show engine overhead."""
    return x + 1


def total(parts: Any) -> int:
    """The join of S3: sums the branch outputs (a dict or a list, depending on the system)."""
    values = parts.values() if isinstance(parts, dict) else parts
    return sum(values)


def make_payload() -> dict[str, Any]:
    """A JSON document of about ``PAYLOAD_BYTES`` with a step counter ``n``."""
    rows: list[dict[str, Any]] = []
    size = 0
    while size < PAYLOAD_BYTES - 64:
        i = len(rows)
        rows.append({"id": i, "name": f"item-{i:06d}", "tags": ["a", "b"], "price": i * 0.5})
        size += len(json.dumps(rows[-1])) + 2
    return {"n": 0, "rows": rows}


def bump(doc: dict[str, Any]) -> dict[str, Any]:
    """The step of S4: returns the whole document with its counter incremented."""
    return {**doc, "n": doc["n"] + 1}


def check_equal(expected: Any) -> Callable[[Any], None]:
    def check(actual: Any) -> None:
        if actual != expected:
            raise AssertionError(f"wrong output: expected {_short(expected)}, got {_short(actual)}")

    return check


def check_payload(payload: dict[str, Any], steps: int = PAYLOAD_STEPS) -> Callable[[Any], None]:
    rows = payload["rows"]

    def check(actual: Any) -> None:
        if not isinstance(actual, dict) or actual.get("n") != steps:
            raise AssertionError(f"wrong payload counter: {_short(actual)}")
        if actual.get("rows") != rows:
            raise AssertionError("the payload's rows came back changed")

    return check


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sizes and time budgets of one run (``--quick`` shrinks them)."""

    quick: bool
    s2_workflows: int
    s5_items: int
    s7_items: int
    latency_budget_s: float
    latency_min_iters: int
    latency_max_iters: int
    warmup: int
    s2_repeats: int
    s5_budget_s: float
    s6_samples: int
    s6_idle_s: float
    poll_interval: float
    pg_url: str
    redis_url: str
    work_dir: str

    @classmethod
    def make(
        cls, *, quick: bool, pg_url: str, redis_url: str, work_dir: str, poll_interval: float
    ) -> Settings:
        return cls(
            quick=quick,
            s2_workflows=30 if quick else 200,
            s5_items=100 if quick else 1000,
            s7_items=1000 if quick else 10_000,
            latency_budget_s=0.2 if quick else 2.5,
            latency_min_iters=5 if quick else 30,
            latency_max_iters=200 if quick else 3000,
            warmup=2 if quick else 10,
            s2_repeats=1 if quick else 2,
            s5_budget_s=0.2 if quick else 3.0,
            s6_samples=2 if quick else 15,
            s6_idle_s=0.1 if quick else 0.3,
            poll_interval=poll_interval,
            pg_url=pg_url,
            redis_url=redis_url,
            work_dir=work_dir,
        )

    def pg_database_url(self, database: str) -> str:
        """``pg_url`` with its database name replaced."""
        base, _, _ = self.pg_url.rpartition("/")
        return f"{base}/{database}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(**data)


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: a system on a backend, possibly in a variant."""

    system: str
    backend: str
    label: str
    scenarios: tuple[str, ...]
    variant: str = ""
    not_applicable: dict[str, str] = field(default_factory=dict)
    # How the system is set up for this row (shown next to its label in the table).
    setup: str = ""

    @property
    def key(self) -> str:
        return "/".join(part for part in (self.system, self.backend, self.variant) if part)


@dataclass
class Result:
    """One cell: a scenario's figures on one row, or why there are none."""

    row: str
    scenario: str
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""
    skipped: str = ""  # not measured: n/a for this system, not installed, service down...
    error: str = ""  # measured but failed (wrong output, exception)
    # Measured, but the sanity check found the row far from what the system does alone
    # (see run.py): the figure stays in the JSON, the table shows "suspect" instead.
    suspect: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Reporter:
    """Collects a row's results; writes them after each one so a crash keeps the rest."""

    def __init__(self, row: Row, out_path: Path | None) -> None:
        self.row = row
        self.results: list[Result] = []
        self._out_path = out_path

    def add(self, result: Result) -> None:
        self.results.append(result)
        if self._out_path is not None:
            tmp = self._out_path.with_suffix(".tmp")
            tmp.write_text(json.dumps([r.to_json() for r in self.results]))
            tmp.replace(self._out_path)

    def measure(self, scenario: str, body: Callable[[], Result]) -> None:
        """Run one scenario; an exception becomes an error cell, not a crash."""
        started = time.monotonic()
        try:
            result = body()
        except Exception as error:
            result = Result(self.row.key, scenario, error=f"{type(error).__name__}: {error}")
        result.metrics["wall_s"] = time.monotonic() - started
        self.add(result)


# -- timing ----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (``fraction`` in [0, 1])."""
    if not sorted_values:
        return math.nan
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def summarize_ms(samples_ns: Sequence[int], divisor: int = 1) -> dict[str, float]:
    """p50/p99/mean/min in milliseconds of ``samples_ns / divisor``, plus the count."""
    values = sorted(ns / divisor / 1e6 for ns in samples_ns)
    return {
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "mean_ms": sum(values) / len(values),
        "min_ms": values[0],
        "n": float(len(values)),
    }


def time_runs(
    run: Callable[[int], T],
    check: Callable[[T], None],
    *,
    warmup: int,
    min_iters: int,
    max_iters: int,
    budget_s: float,
) -> list[int]:
    """Time ``run(i)`` in nanoseconds after ``warmup`` calls, checking every output.

    Runs at least ``min_iters`` and at most ``max_iters`` times, stopping once
    ``budget_s`` has been spent. The check runs outside the timed region.
    """
    for i in range(warmup):
        check(run(-1 - i))
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(budget_s * 1e9)
    i = 0
    while i < max_iters and (i < min_iters or time.perf_counter_ns() < deadline):
        start = time.perf_counter_ns()
        output = run(i)
        samples.append(time.perf_counter_ns() - start)
        check(output)
        i += 1
    return samples


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = OBSERVE_INTERVAL
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        time.sleep(interval)


def throughput(elapsed_ns: Sequence[int], steps: int) -> dict[str, float]:
    """Steps per second of each repeat: the mean, the range and the count."""
    rates = [steps / (ns / 1e9) for ns in elapsed_ns]
    return {
        "steps_per_s": sum(rates) / len(rates),
        "min_steps_per_s": min(rates),
        "max_steps_per_s": max(rates),
        "seconds": sum(elapsed_ns) / len(elapsed_ns) / 1e9,
        "steps": float(steps),
        "repeats": float(len(rates)),
    }


FORK_OUTPUT = FORK_WIDTH * 2  # input 0: the first step gives 1, each branch 2


@dataclass
class Shapes:
    """How one row runs the in-process scenarios; each takes a run index (negative in
    warm-up) and returns the workflow's output. ``None``: the row does not run it."""

    chain: Callable[[int], Any] | None = None  # S1: input 0, output 10
    fork: Callable[[int], Any] | None = None  # S3: input 0, output 20
    payload: Callable[[int, dict[str, Any]], Any] | None = None  # S4
    mapper: Callable[[int, list[int]], Any] | None = None  # S5: items 0..n-1, each + 1
    wide_mapper: Callable[[int, list[int]], Any] | None = None  # S7: the same, many more items
    notes: dict[str, str] = field(default_factory=dict)


def run_sequential(reporter: Reporter, settings: Settings, shapes: Shapes) -> None:
    """S1, S3, S4, S5 and S7 for one row, each timed run after run."""
    key = reporter.row.key
    wanted = reporter.row.scenarios

    def timed(run: Callable[[int], Any], check: Callable[[Any], None]) -> list[int]:
        return time_runs(
            run,
            check,
            warmup=settings.warmup,
            min_iters=settings.latency_min_iters,
            max_iters=settings.latency_max_iters,
            budget_s=settings.latency_budget_s,
        )

    def cell(scenario: str, metrics: dict[str, float]) -> Result:
        return Result(key, scenario, metrics, note=shapes.notes.get(scenario, ""))

    chain = shapes.chain
    if "S1" in wanted and chain is not None:
        reporter.measure(
            "S1",
            lambda: cell(
                "S1",
                summarize_ms(timed(chain, check_equal(CHAIN_LENGTH)), CHAIN_LENGTH),
            ),
        )
    fork = shapes.fork
    if "S3" in wanted and fork is not None:
        reporter.measure(
            "S3",
            lambda: cell("S3", summarize_ms(timed(fork, check_equal(FORK_OUTPUT)))),
        )
    payload_fn = shapes.payload
    if "S4" in wanted and payload_fn is not None:
        doc = make_payload()
        reporter.measure(
            "S4",
            lambda: cell(
                "S4",
                summarize_ms(
                    timed(lambda i: payload_fn(i, doc), check_payload(doc)),
                    PAYLOAD_STEPS,
                ),
            ),
        )
    mapper = shapes.mapper
    if "S5" in wanted and mapper is not None:
        items = list(range(settings.s5_items))
        expected = [x + 1 for x in items]

        def s5() -> Result:
            samples = time_runs(
                lambda i: mapper(i, items),
                check_equal(expected),
                # One run can take seconds on a slow peer; S1-S4 already warmed the engine.
                warmup=0,
                min_iters=1,
                max_iters=20,
                budget_s=settings.s5_budget_s,
            )
            metrics = summarize_ms(samples)
            metrics["items"] = float(len(items))
            metrics["per_item_us"] = metrics["p50_ms"] * 1000 / len(items)
            return cell("S5", metrics)

        reporter.measure("S5", s5)
    wide_mapper = shapes.wide_mapper
    if "S7" in wanted and wide_mapper is not None:
        reporter.measure("S7", lambda: measure_wide_map(key, wide_mapper, settings, shapes))


def measure_wide_map(
    key: str, mapper: Callable[[int, list[int]], Any], settings: Settings, shapes: Shapes
) -> Result:
    """S7: S5's map at a size where per-event costs that grow with the map would show.

    A map whose every completion walks all items is quadratic: 10x the items, 100x the
    time. ``per_item_us`` should stay near S5's.
    """
    items = list(range(settings.s7_items))
    samples = time_runs(
        lambda i: mapper(i, items),
        check_equal([x + 1 for x in items]),
        warmup=0,
        min_iters=1,
        max_iters=3,  # one run takes seconds (tens on a durable backend)
        budget_s=settings.s5_budget_s,
    )
    metrics = summarize_ms(samples)
    metrics["items"] = float(len(items))
    metrics["per_item_us"] = metrics["p50_ms"] * 1000 / len(items)
    return Result(key, "S7", metrics, note=shapes.notes.get("S7", ""))


def measure_s2(
    submit: Callable[[str], T],
    wait: Callable[[T], Any],
    settings: Settings,
    tag: str,
) -> dict[str, float]:
    """S2: submit ``s2_workflows`` chains at once, wait for all; steps/s per repeat.

    The clock runs from the first submit to the last completion; every output is
    checked after the clock stops.
    """
    count = settings.s2_workflows
    elapsed: list[int] = []
    for repeat in range(settings.s2_repeats):
        ids = [f"s2-{tag}-{repeat}-{i}" for i in range(count)]
        start = time.perf_counter_ns()
        handles = [submit(instance_id) for instance_id in ids]
        outputs = [wait(handle) for handle in handles]
        elapsed.append(time.perf_counter_ns() - start)
        check = check_equal(CHAIN_LENGTH)
        for output in outputs:
            check(output)
    return throughput(elapsed, count * CHAIN_LENGTH)


def measure_s6(
    submit: Callable[[str], T],
    wait: Callable[[T], Any],
    settings: Settings,
    tag: str,
) -> dict[str, float]:
    """S6: one chain submitted to an idle worker, timed until its output is seen."""
    check = check_equal(CHAIN_LENGTH)
    samples: list[int] = []
    for i in range(settings.s6_samples + 1):  # the first one warms up
        time.sleep(settings.s6_idle_s)
        start = time.perf_counter_ns()
        output = wait(submit(f"s6-{tag}-{i}"))
        if i > 0:
            samples.append(time.perf_counter_ns() - start)
        check(output)
    return summarize_ms(samples)


def run_id() -> str:
    return os.urandom(4).hex()


# -- the machine -----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versioned(distribution: str, label: str | None = None) -> str:
    """``"dbos 3.4.0"``, or just the name when it is not installed."""
    version = package_version(distribution)
    name = label or distribution
    return name if version == "not installed" else f"{name} {version}"


def machine_info(pg_version: str, redis_version: str) -> dict[str, str]:
    import sqlite3

    return {
        "nproc": _command_output(["nproc"]) or str(os.cpu_count()),
        "load average at start": load_average(),
        "cpu": cpu_model(),
        "memory": _memory(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "postgresql": pg_version,
        "redis": redis_version,
        "sqlite": sqlite3.sqlite_version,
        "sayiir-py": package_version("sayiir-py"),
        "sayiir": package_version("sayiir"),
        "dbos": package_version("dbos"),
        "celery": package_version("celery"),
        "asyncpg": package_version("asyncpg"),
    }


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


# -- the table ---------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, scenario, metric)
    ("S1 per step p50", "S1", "p50_ms"),
    ("S1 per step p99", "S1", "p99_ms"),
    ("S2 steps/s", "S2", "steps_per_s"),
    ("S3 per workflow p50", "S3", "p50_ms"),
    ("S4 per step p50", "S4", "p50_ms"),
    ("S5 per workflow p50", "S5", "p50_ms"),
    ("S6 end to end p50", "S6", "p50_ms"),
    ("S6 end to end p99", "S6", "p99_ms"),
    ("S7 wide map per workflow p50", "S7", "p50_ms"),
)
# The floor rows put their commit latency under S1 and their commit rate under S2.
FLOOR_COLUMNS = {"S1": "floor", "S2": "floor"}
FLOOR_METRICS = {"S2": "commits_per_s"}


def format_ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    if value < 0.1:
        return f"{value:.3f} ms"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.1f} ms"
    return f"{value / 1000:.2f} s"


def format_rate(metrics: dict[str, float], key: str) -> str:
    value = metrics[key]
    text = f"{value:,.0f}"
    low, high = metrics.get("min_" + key), metrics.get("max_" + key)
    if low is not None and high is not None and metrics.get("repeats", 1) > 1:
        text += f" ({low:,.0f}-{high:,.0f})"
    return text


class Footnotes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def render_table(rows: Sequence[Row], results: Sequence[Result], settings: Settings) -> str:
    """The markdown table: one line per row, notes and reasons as footnotes below."""
    cells = {(r.row, r.scenario): r for r in results}
    footnotes = Footnotes()
    headers = ["system, backend", *(header for header, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        is_floor = row.system == "floor"
        rendered = [row.label + (f" {footnotes.mark(row.setup)}" if row.setup else "")]
        noted: set[str] = set()
        for _, scenario, metric in COLUMNS:
            source = FLOOR_COLUMNS.get(scenario, "") if is_floor else scenario
            result = cells.get((row.key, source)) if source else None
            if is_floor and result is not None and scenario in FLOOR_METRICS:
                metric = FLOOR_METRICS[scenario]
            rendered.append(_cell(result, metric, footnotes, with_note=scenario not in noted))
            noted.add(scenario)
        lines.append("| " + " | ".join(rendered) + " |")
    out = ["\n".join(lines)]
    if footnotes.texts:
        out.append("\n".join(f"{i}. {text}" for i, text in enumerate(footnotes.texts, 1)))
    sizes = (
        f"Sizes: S2 {settings.s2_workflows} workflows x {CHAIN_LENGTH} steps "
        f"({settings.s2_repeats} repeat(s), mean and range); S5 {settings.s5_items} items; "
        f"S7 {settings.s7_items} items; "
        f"S6 {settings.s6_samples} samples after {settings.s6_idle_s} s idle; "
        f"worker poll interval {settings.poll_interval} s."
    )
    if settings.quick:
        sizes += " QUICK RUN: smaller sizes and budgets, do not quote these figures."
    out.append(sizes)
    return "\n\n".join(out) + "\n"


def _cell(result: Result | None, metric: str, footnotes: Footnotes, *, with_note: bool) -> str:
    if result is None:
        return ""
    if result.suspect and not result.skipped and not result.error:
        return f"suspect {footnotes.mark(result.suspect)}" if with_note else "suspect"
    if result.skipped or result.error:
        if result.error:
            word, reason = "error", result.error
        elif result.skipped.startswith("n/a: "):
            word, reason = "n/a", result.skipped[len("n/a: ") :]
        else:
            word, reason = "skipped", result.skipped
        return f"{word} {footnotes.mark(reason)}" if with_note else word
    if metric not in result.metrics:
        return ""
    if metric.endswith("_per_s"):
        text = format_rate(result.metrics, metric)
    else:
        text = format_ms(result.metrics[metric])
    if result.note and with_note:
        text += " " + footnotes.mark(result.note)
    return text


def render_machine(machine: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in machine.items())
