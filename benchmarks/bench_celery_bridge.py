"""S2 through ``sayiir_celery`` beside a plain Celery chain, on the same Celery workers.

    python benchmarks/bench_celery_bridge.py [--workflows 200] [--repeats 2] [--short]
                                             [--early-ack]

Both rows run 200 chains of 10 trivial steps (``x + 1``) submitted at once, on one
``celery worker --pool=prefork --concurrency=2`` process started by this script, Redis
as broker (database 14, flushed at the end) and, for the bridge, PostgreSQL (a database
of the run's own, dropped at the end). Plain Celery is a ``chain`` waited for through
the Redis result backend: not durable. The bridge checkpoints every step in
PostgreSQL. The figure is steps/s from the first submit to the last result.

Beside it, PostgreSQL transactions per bridged step (``pg_stat_database.xact_commit``
of the run's database, so every process counts, the sweeper included): a count that
does not depend on the machine's load. Every bridge write is one autocommit
statement, so it is also the round trips of writes and reads per step. And the CPU
time of the worker's processes per step (``/proc``, Linux), for both rows: less noisy
than steps/s on a busy machine.
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
from pathlib import Path

from celery import Celery, chain

from sayiir_celery import SayiirCelery
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
# Read by the worker this script starts (``--early-ack``).
ACKS_LATE = os.environ.get("SAYIIR_BENCH_BRIDGE_ACKS_LATE", "1") != "0"

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
)


def start_worker(log: Path, *, acks_late: bool = True) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SAYIIR_BENCH_BRIDGE_SCHEMA": SCHEMA}
    env["SAYIIR_BENCH_BRIDGE_ACKS_LATE"] = "1" if acks_late else "0"
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


def plain_s2(count: int, worker: int) -> tuple[float, float]:
    """Steps/s, and the worker's CPU milliseconds per step."""
    signature = chain(plain_inc.s(0), *(plain_inc.s() for _ in range(STEPS - 1)))
    cpu = _worker_cpu(worker)
    started = time.perf_counter()
    results = [signature.apply_async() for _ in range(count)]
    for result in results:
        assert result.get(timeout=300, interval=0.001) == STEPS
    rate = count * STEPS / (time.perf_counter() - started)
    return rate, (_worker_cpu(worker) - cpu) * 1000 / (count * STEPS)


def bridge_s2(count: int, tag: str, worker: int) -> tuple[float, float, float]:
    """Steps/s, PostgreSQL transactions per step and the worker's CPU ms per step."""
    ids = [f"{tag}-{n}" for n in range(count)]
    before = _transactions()
    cpu = _worker_cpu(worker)
    started = time.perf_counter()
    for instance_id in ids:
        bridge.client.submit(bridge_chain, instance_id, 0)
    for instance_id in ids:
        assert bridge.client.result(instance_id, timeout=300) == STEPS
    rate = count * STEPS / (time.perf_counter() - started)
    cpu_ms = (_worker_cpu(worker) - cpu) * 1000 / (count * STEPS)
    return rate, (_transactions() - before) / (count * STEPS), cpu_ms


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
    plain: list[float] = []
    bridged: list[float] = []
    per_step: list[float] = []
    plain_cpu: list[float] = []
    bridge_cpu: list[float] = []
    try:
        worker = start_worker(log, acks_late=not args.early_ack)
        try:
            plain_s2(20, worker.pid)  # warm up both paths (pool processes, connections)
            bridge_s2(20, f"warm-{secrets.token_hex(3)}", worker.pid)
            for _ in range(args.repeats):
                rate, cpu_ms = plain_s2(args.workflows, worker.pid)
                plain.append(rate)
                plain_cpu.append(cpu_ms)
                tag = f"run-{secrets.token_hex(3)}"
                rate, transactions, cpu_ms = bridge_s2(args.workflows, tag, worker.pid)
                bridged.append(rate)
                per_step.append(transactions)
                bridge_cpu.append(cpu_ms)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            bridge.client.close()
            run_sync(bridge.backend.close())
            app.backend.client.flushdb()
            log.unlink(missing_ok=True)
    finally:
        drop = f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'
        run_sync(execute(SERVER_URL, drop))
    mean_plain, mean_bridge = sum(plain) / len(plain), sum(bridged) / len(bridged)
    print(f"S2: {args.workflows} chains of {STEPS} steps, 1 worker --pool=prefork -c 2")
    print("| row | steps/s (mean) | runs |")
    print("|---|---|---|")
    print(f"| plain Celery chain, not durable | {mean_plain:,.0f} | {_runs(plain)} |")
    label = "durable, acks_late=False" if args.early_ack else "durable"
    print(f"| sayiir_celery bridge, {label} | {mean_bridge:,.0f} | {_runs(bridged)} |")
    print(f"bridge / plain: {mean_bridge / mean_plain:.2f}x")
    transactions = ", ".join(f"{value:.2f}" for value in per_step)
    print(f"bridge: PostgreSQL transactions per step: {transactions}")
    print(f"worker CPU ms per step: plain {_runs(plain_cpu, 2)}; bridge {_runs(bridge_cpu, 2)}")
    return 0


def _runs(values: list[float], digits: int = 0) -> str:
    return ", ".join(f"{value:,.{digits}f}" for value in values)


if __name__ == "__main__":
    raise SystemExit(main())
