"""Run the benchmark suite: this project and its peers, the same scenarios, one table.

    python benchmarks/run.py                       # everything (about 5-7 minutes)
    python benchmarks/run.py --quick               # smoke run (under a minute)
    python benchmarks/run.py --systems ours,floor --scenarios S1,S2 --json out.json

Each row (a system on a backend) runs in its own process, so a peer that is missing,
crashes or hangs costs its row, not the suite. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from common import (
    SCENARIO_ORDER,
    SCENARIOS,
    Reporter,
    Result,
    Row,
    Settings,
    load_average,
    machine_info,
    render_machine,
    render_table,
)
from summary import render_summary

HERE = Path(__file__).resolve().parent
MODULES = {
    "ours": "bench_ours",
    "sayiir10": "bench_sayiir10",
    "dbos": "bench_dbos",
    "celery": "bench_celery",
    "floor": "bench_floor",
    "django": "bench_django",
}
# Each module keeps its tables in a database of its own, dropped and recreated per run.
DATABASES = {
    "ours": "sayiir_bench",
    "floor": "sayiir_bench",
    "sayiir10": "sayiir_bench_s10",
    "dbos": "sayiir_bench_dbos",
}
# Systems measured for comparison: each of their rows gets the sanity check below.
PEERS = ("sayiir10", "dbos", "celery")
# A peer's S1 in its row and S1 alone in a fresh process may differ by this factor
# before the row is flagged instead of printed (S1 moves by ~10% between quiet runs).
SANITY_RATIO = 1.5
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark sayiir_core against sayiir 1.0, DBOS and Celery.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Scenarios:\n" + "\n".join(f"  {k:6} {v}" for k, v in SCENARIOS.items()),
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIO_ORDER), help="comma list")
    parser.add_argument("--systems", default=",".join(MODULES), help="comma list")
    parser.add_argument(
        "--backends", default="", help="comma list: none,memory,sqlite,postgres,redis"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="write machine, settings and results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SAYIIR_BENCH_PG_URL", DEFAULT_PG_URL),
        help="a superuser URL; the suite creates and drops its own databases",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("SAYIIR_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="idle poll interval of every polling worker (seconds)",
    )
    parser.add_argument("--row-timeout", type=float, help="seconds per row before it is killed")
    parser.add_argument(
        "--sanity-ratio",
        type=float,
        default=SANITY_RATIO,
        help="a peer row whose S1 differs from S1 rerun alone by more than this factor "
        "is shown as suspect",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODULE", "ROW"), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# -- services ----------------------------------------------------------------------------


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def redis_version(url: str) -> str:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            s.sendall(b"INFO server\r\n")
            data = s.recv(65536).decode(errors="replace")
    except OSError as error:
        return f"unreachable ({error})"
    for line in data.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1]
    return "unknown"


async def _recreate_databases(admin_url: str, names: list[str]) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        return version
    finally:
        await conn.close()


def prepare_postgres(admin_url: str, systems: list[str]) -> tuple[str, str]:
    """Recreate the suite's databases; returns (server version, why PG rows skip or "")."""
    if not reachable(admin_url, 5432):
        return "unreachable", f"PostgreSQL unreachable at {urlsplit(admin_url).netloc}"
    if importlib.util.find_spec("asyncpg") is None:
        return "unknown", "asyncpg not installed (pip install -e '.[postgres]')"
    names = sorted({DATABASES[s] for s in systems if s in DATABASES})
    try:
        return asyncio.run(_recreate_databases(admin_url, names)), ""
    except Exception as error:
        return "unknown", f"could not recreate the bench databases: {error}"


# -- the parent: one child process per row ----------------------------------------------


def load(system: str) -> ModuleType:
    return importlib.import_module(MODULES[system])


def plan(args: argparse.Namespace) -> list[tuple[str, Row]]:
    systems = split(args.systems)
    unknown = [s for s in systems if s not in MODULES]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; choose from {list(MODULES)}")
    scenarios = set(split(args.scenarios))
    if not scenarios <= set(SCENARIO_ORDER):
        raise SystemExit(f"unknown scenario(s) {sorted(scenarios - set(SCENARIO_ORDER))}")
    backends = set(split(args.backends))
    planned = []
    for system in systems:
        for row in load(system).ROWS:
            if backends and row.backend not in backends:
                continue
            if scenarios & set(row.scenarios):
                planned.append((system, row))
    return planned


def run_row_process(
    system: str,
    row: Row,
    settings: Settings,
    scenarios: list[str],
    timeout: float,
    log_dir: Path,
) -> list[Result]:
    log_dir.mkdir(parents=True, exist_ok=True)
    out = log_dir / f"{row.key.replace('/', '_')}.json"
    out.unlink(missing_ok=True)  # left by an earlier process of the same row
    log = log_dir / f"{row.key.replace('/', '_')}.log"
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--child",
        MODULES[system],
        row.key,
        "--settings",
        json.dumps(settings.to_json()),
        "--scenarios",
        ",".join(scenarios),
        "--out",
        str(out),
    ]
    failure = ""
    with log.open("w") as log_file:
        # A session of its own, so a timeout ends the row's workers along with it.
        proc = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=HERE, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
            if code != 0:
                failure = f"row process exited with {code}: {last_line(log)}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            failure = f"row killed after {timeout:.0f} s"
    results = [Result(**r) for r in json.loads(out.read_text())] if out.exists() else []
    if failure:
        done = {r.scenario for r in results}
        wanted = [s for s in row.scenarios if s in scenarios]
        results += [Result(row.key, s, error=failure) for s in wanted if s not in done]
    return results


def run_row_processes(
    system: str,
    row: Row,
    settings: Settings,
    scenarios: list[str],
    timeout: float,
    log_dir: Path,
) -> list[Result]:
    """The row in one process, or one process per scenario when the module asks for it.

    A module sets ``FRESH_PROCESS_PER_SCENARIO = True`` when its system keeps state
    between scenarios that would weigh on the next one (DBOS: a queue's poller).
    """
    if not getattr(load(system), "FRESH_PROCESS_PER_SCENARIO", False):
        return run_row_process(system, row, settings, scenarios, timeout, log_dir)
    results: list[Result] = []
    for scenario in scenarios:
        if scenario in row.scenarios:
            results += run_row_process(system, row, settings, [scenario], timeout, log_dir)
    return results


def check_sanity(
    system: str,
    row: Row,
    settings: Settings,
    row_results: list[Result],
    max_ratio: float,
    log_dir: Path,
) -> None:
    """Rerun the peer's S1 alone in a fresh process; flag the row if the two disagree.

    A peer figure far from what the peer does alone (a poller left running, a load spike
    during the row) must not reach the table: every cell of such a row is marked suspect,
    with both figures in the footnote; the JSON keeps the numbers.
    """
    measured = [r for r in row_results if not r.error and not r.skipped]
    s1 = next((r for r in measured if r.scenario == "S1"), None)
    if s1 is None or "p50_ms" not in s1.metrics:
        return
    alone = run_row_process(system, row, settings, ["S1"], 120.0, log_dir / "sanity")
    again = next((r for r in alone if r.scenario == "S1" and "p50_ms" in r.metrics), None)
    in_row = s1.metrics["p50_ms"]
    if again is None or again.error:
        reason = f"sanity check: S1 rerun alone failed ({again.error if again else 'no result'})"
    else:
        alone_p50 = again.metrics["p50_ms"]
        s1.metrics["sanity_alone_p50_ms"] = alone_p50
        ratio = max(in_row, alone_p50) / max(min(in_row, alone_p50), 1e-9)
        if ratio <= max_ratio:
            return
        reason = (
            f"sanity check failed: S1 p50 {in_row:.3f} ms in the row against {alone_p50:.3f} ms "
            f"rerun alone in a fresh process ({ratio:.1f}x > {max_ratio}x); rerun on a quiet "
            "machine"
        )
    for result in row_results:
        if not result.error and not result.skipped:
            result.suspect = reason


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def skip_all(row: Row, scenarios: list[str], reason: str) -> list[Result]:
    return [Result(row.key, s, skipped=reason) for s in row.scenarios if s in scenarios]


def main_parent(args: argparse.Namespace) -> int:
    planned = plan(args)
    scenarios = [s for s in SCENARIO_ORDER if s in split(args.scenarios)]
    systems = sorted({system for system, _ in planned})
    work_dir = Path(tempfile.mkdtemp(prefix="sayiir-bench-"))
    settings = Settings.make(
        quick=args.quick,
        pg_url=args.pg_url,
        redis_url=args.redis_url,
        work_dir=str(work_dir),
        poll_interval=args.poll_interval,
    )
    needs_pg = any(row.backend == "postgres" for _, row in planned)
    pg_version, pg_skip = prepare_postgres(args.pg_url, systems) if needs_pg else ("not used", "")
    redis_skip = "" if reachable(args.redis_url, 6379) else "Redis unreachable"
    machine = machine_info(pg_version, redis_version(args.redis_url))
    timeout = args.row_timeout or (90.0 if args.quick else 300.0)
    print("## Machine\n\n" + render_machine(machine) + "\n", flush=True)

    results: list[Result] = []
    started = time.monotonic()
    unavailable: dict[str, str] = {}
    for system, row in planned:
        if system not in unavailable:
            unavailable[system] = load(system).available()
        reason = unavailable[system]
        if not reason and row.backend == "postgres":
            reason = pg_skip
        if not reason and row.backend == "redis":
            reason = redis_skip
        row_started = time.monotonic()
        if reason:
            row_results = skip_all(row, scenarios, reason)
        else:
            row_results = run_row_processes(system, row, settings, scenarios, timeout, work_dir)
            if system in PEERS:
                check_sanity(system, row, settings, row_results, args.sanity_ratio, work_dir)
        results += row_results
        problems = sum(1 for r in row_results if r.error)
        status = f"{problems} error(s)" if problems else ("skipped" if reason else "ok")
        print(f"  {row.label:<48} {time.monotonic() - row_started:6.1f} s  {status}", flush=True)

    rows = [row for _, row in planned]
    machine["load average at end"] = load_average()
    table = render_table(rows, results, settings)
    summary = render_summary(rows, results)
    elapsed = time.monotonic() - started
    print(f"\n## Results ({elapsed:.0f} s)\n\n{table}\n{summary}", flush=True)
    print(f"load average at end: {machine['load average at end']}")
    if args.markdown:
        machine_md = render_machine(machine)
        args.markdown.write_text(
            f"## Machine\n\n{machine_md}\n\n## Results\n\n{table}\n## Summary\n\n{summary}"
        )
    if args.json:
        document: dict[str, Any] = {
            "machine": machine,
            "settings": settings.to_json(),
            "scenarios": {s: SCENARIOS[s] for s in scenarios},
            "rows": [dataclasses.asdict(row) | {"key": row.key} for row in rows],
            "results": [r.to_json() for r in results],
            "elapsed_s": elapsed,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


# -- the child: one row ------------------------------------------------------------------


def main_child(args: argparse.Namespace) -> int:
    module_name, row_key = args.child
    module = importlib.import_module(module_name)
    row = next(r for r in module.ROWS if r.key == row_key)
    settings = Settings.from_json(json.loads(args.settings))
    wanted = set(split(args.scenarios))
    reporter = Reporter(row, args.out)
    for scenario, reason in row.not_applicable.items():
        if scenario in wanted:
            reporter.add(Result(row.key, scenario, skipped=f"n/a: {reason}"))
    runnable = tuple(s for s in row.scenarios if s in wanted and s not in row.not_applicable)
    reporter.row = dataclasses.replace(row, scenarios=runnable)
    try:
        module.run_row(reporter.row, settings, reporter)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return main_child(args)
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
