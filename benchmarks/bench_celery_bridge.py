"""S2 through ``sayiir_celery`` beside a plain Celery chain, on the same Celery workers.

    python benchmarks/bench_celery_bridge.py [--workflows 200] [--repeats 2] [--short]
                                             [--early-ack]

Every row runs 200 chains of 10 trivial steps (``x + 1``) submitted at once, on one
``celery worker --pool=prefork --concurrency=2`` process started by this script, Redis
as broker (database 14, flushed at the end) and, for the bridge, PostgreSQL (a database
of the run's own, dropped at the end). Plain Celery is a ``chain`` waited for through
the Redis result backend: not durable. The bridge checkpoints every step in
PostgreSQL, in two modes: with chain continuation (``continue_for=1.0``, the default:
the task that ran a step runs the chain's next one itself, for up to a second) and
with one message per step (``continue_for=0``). Each repeat starts one worker per
mode and runs the plain chain and the bridge on it, so each mode's ratio is to the
plain chain on the same worker process. The figure is steps/s from the first submit
to the last result.

Beside it, PostgreSQL transactions per bridged step (``pg_stat_database.xact_commit``
of the run's database, so every process counts, the sweeper included): a count that
does not depend on the machine's load. Every bridge write is one autocommit
statement, so it is also the round trips of writes and reads per step. And the CPU
time of the worker's processes per step (``/proc``, Linux), for both rows: less noisy
than steps/s on a busy machine.
And, for the bridge, messages per step: the step tasks the worker received (its
``inspect().stats()`` totals) per step run. (A plain chain sends one per step.)
``--short`` (20 chains, one repeat) proves the script works on a busy machine.
``--early-ack`` runs the bridge with ``acks_late=False`` (its opt-in trade-off, see
docs/integrations/celery.md); the plain chain is Celery's default either way.

This file is also the worker's app module (``celery -A bench_celery_bridge worker``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery, chain

from sayiir_celery import STEP_TASK, SayiirCelery
from sayiir_core import Flow, task
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.testing.postgres import execute, with_database

HERE = Path(__file__).resolve().parent
STEPS = 10
REDIS_URL = os.environ.get("SAYIIR_BENCH_BRIDGE_REDIS", "redis://127.0.0.1:6379/14")
SERVER_URL = os.environ.get("SAYIIR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# The run's own database, so that its transaction count is the bridge's alone; set in
# the environment here so the worker this script starts uses the same one.
DATABASE = os.environ.setdefault("SAYIIR_BENCH_BRIDGE_DB", f"bench_bridge_{secrets.token_hex(3)}")
PG_URL = with_database(SERVER_URL, DATABASE)
SCHEMA = os.environ.get("SAYIIR_BENCH_BRIDGE_SCHEMA", "bench_celery_bridge")
# Read by the worker this script starts (``--early-ack``, and each row's mode).
ACKS_LATE = os.environ.get("SAYIIR_BENCH_BRIDGE_ACKS_LATE", "1") != "0"
CONTINUE_FOR = float(os.environ.get("SAYIIR_BENCH_BRIDGE_CONTINUE_FOR", "1.0"))
MODES = {
    "continuation": (1.0, "continue_for=1.0 (chain continuation, the default)"),
    "per-step": (0.0, "continue_for=0 (one message per step)"),
}

app = Celery("bench_bridge", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.plain_inc")
def plain_inc(x: int) -> int:
    return x + 1


@task("inc")
def inc(x: int) -> int:
    return x + 1


flow = Flow("bridge_chain")
for n in range(STEPS):
    flow = flow.then(inc, name=f"inc{n}")
bridge_chain = flow.build()
bridge = SayiirCelery(
    app,
    backend=PostgresBackend(PG_URL, schema=SCHEMA, max_size=8),
    workflows=[bridge_chain],
    acks_late=ACKS_LATE,
    continue_for=CONTINUE_FOR,
)


def start_worker(
    log: Path, *, acks_late: bool = True, continue_for: float = 1.0
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SAYIIR_BENCH_BRIDGE_SCHEMA": SCHEMA}
    env["SAYIIR_BENCH_BRIDGE_ACKS_LATE"] = "1" if acks_late else "0"
    env["SAYIIR_BENCH_BRIDGE_CONTINUE_FOR"] = repr(continue_for)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "celery", "-A", "bench_celery_bridge", "worker"]
    command += ["--pool=prefork", "--concurrency=2", "--loglevel=WARNING"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as out:
        worker = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start; see {log}")
    return worker


@dataclass
class Row:
    """One row's figures, one entry per repeat."""

    label: str
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    messages: list[float] = field(default_factory=list)
    transactions: list[float] = field(default_factory=list)
    plain_beside: list[float] = field(default_factory=list)  # the plain rate, same worker

    def mean(self) -> float:
        return sum(self.rates) / len(self.rates)


def plain_s2(count: int, worker: int, row: Row) -> float:
    """Steps/s (also recorded in ``row`` with CPU ms per step)."""
    signature = chain(plain_inc.s(0), *(plain_inc.s() for _ in range(STEPS - 1)))
    cpu = _worker_cpu(worker)
    started = time.perf_counter()
    results = [signature.apply_async() for _ in range(count)]
    for result in results:
        assert result.get(timeout=300, interval=0.001) == STEPS
    rate = count * STEPS / (time.perf_counter() - started)
    row.rates.append(rate)
    row.cpu_ms.append((_worker_cpu(worker) - cpu) * 1000 / (count * STEPS))
    return rate


def bridge_s2(count: int, tag: str, worker: int, row: Row | None = None) -> None:
    """Steps/s, PostgreSQL transactions, CPU ms and messages per step, into ``row``."""
    ids = [f"{tag}-{n}" for n in range(count)]
    before = _transactions() if row is not None else 0
    cpu, received = _worker_cpu(worker), _tasks_received(STEP_TASK)
    started = time.perf_counter()
    for instance_id in ids:
        bridge.client.submit(bridge_chain, instance_id, 0)
    for instance_id in ids:
        assert bridge.client.result(instance_id, timeout=300) == STEPS
    rate = count * STEPS / (time.perf_counter() - started)
    cpu_ms = (_worker_cpu(worker) - cpu) * 1000 / (count * STEPS)
    messages = (_tasks_received(STEP_TASK, settle=True) - received) / (count * STEPS)
    if row is not None:
        row.rates.append(rate)
        row.cpu_ms.append(cpu_ms)
        row.messages.append(messages)
        row.transactions.append((_transactions() - before) / (count * STEPS))


def _tasks_received(name: str, *, settle: bool = False) -> int:
    """How many ``name`` tasks the worker has received so far (one per message).

    ``settle``: wait a moment first: the worker counts a task once its pool process
    reports it started, which may come after the instance's result is out."""
    if settle:
        time.sleep(1.0)
    stats = app.control.inspect(timeout=2.0).stats() or {}
    return sum(int(worker["total"].get(name, 0)) for worker in stats.values())


def _worker_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the worker and its pool processes so far; Linux's
    /proc (elsewhere NaN). Counts the sweeper too, and any idle polling."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0.0
        for process in [str(pid), *children]:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _transactions() -> int:
    """Transactions committed in the run's database so far (statistics are flushed by
    each process about once a second: wait for them to settle)."""
    import asyncpg

    async def read() -> int:
        connection = await asyncpg.connect(SERVER_URL)
        try:
            count: int = await connection.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", DATABASE
            )
            return count
        finally:
            await connection.close()

    time.sleep(1.5)
    return run_sync(read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--short", action="store_true", help="20 chains, one repeat")
    parser.add_argument("--early-ack", action="store_true", help="the bridge with acks_late=False")
    args = parser.parse_args()
    if args.short:
        args.workflows, args.repeats = 20, 1
    run_sync(execute(SERVER_URL, f'CREATE DATABASE "{DATABASE}"'))
    log = Path(f"/tmp/bench-celery-bridge-{os.getpid()}.log")
    durable = "durable, acks_late=False" if args.early_ack else "durable"
    plain = Row("plain Celery chain, not durable")
    rows = {
        mode: Row(f"sayiir_celery bridge, {durable}, {label}") for mode, (_, label) in MODES.items()
    }
    try:
        for _ in range(args.repeats):
            # Both modes in each repeat, one after the other: a load spike on the shared
            # machine then hits both rather than one.
            for mode, (continue_for, _) in MODES.items():
                row = rows[mode]
                worker = start_worker(log, acks_late=not args.early_ack, continue_for=continue_for)
                try:
                    # Warm up both paths (pool processes, connections).
                    plain_s2(20, worker.pid, Row("warm-up"))
                    bridge_s2(20, f"warm-{secrets.token_hex(3)}", worker.pid)
                    row.plain_beside.append(plain_s2(args.workflows, worker.pid, plain))
                    bridge_s2(args.workflows, f"run-{secrets.token_hex(3)}", worker.pid, row)
                finally:
                    worker.terminate()
                    worker.wait(timeout=60)
    finally:
        bridge.client.close()
        run_sync(bridge.backend.close())
        app.backend.client.flushdb()
        log.unlink(missing_ok=True)
        drop = f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'
        run_sync(execute(SERVER_URL, drop))
    print(f"S2: {args.workflows} chains of {STEPS} steps, 1 worker --pool=prefork -c 2")
    print("| row | steps/s (mean) | runs | worker CPU ms/step | messages/step |")
    print("|---|---|---|---|---|")
    for row in (plain, *rows.values()):
        print(
            f"| {row.label} | {row.mean():,.0f} | {_runs(row.rates)} | {_runs(row.cpu_ms, 2)} "
            f"| {_runs(row.messages, 2) or '1 (a message per step)'} |"
        )
    for mode, row in rows.items():
        beside = sum(row.plain_beside) / len(row.plain_beside)
        transactions = _runs(row.transactions, 2)
        print(
            f"bridge ({MODES[mode][1]}) / plain on the same workers: "
            f"{row.mean() / beside:.2f}x; PostgreSQL transactions per step: {transactions}"
        )
    return 0


def _runs(values: list[float], digits: int = 0) -> str:
    return ", ".join(f"{value:,.{digits}f}" for value in values)


if __name__ == "__main__":
    raise SystemExit(main())
