"""Latency of one step's ``commit`` on PostgresBackend, next to SqliteBackend.

    python benchmarks/pg_commit_latency.py [postgresql://...] [--commits 2000]

One instance, one claim, then ``--commits`` commits of one small checkpoint and two
history events each, awaited one after another on a single pooled connection (what a
runner does for a linear workflow). Also times a bare ``SELECT 1`` round trip on the
same server, the floor for any remote commit. Uses (and drops) a scratch schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from sayiir_core.backends import (
    Backend,
    ConflictPolicy,
    HistoryEvent,
    NewInstance,
    SqliteBackend,
    StepWrite,
)
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.status import Status

SCHEMA = "sayiir_bench_commit"


async def commit_latencies(backend: Backend, commits: int) -> list[float]:
    now = time.time()
    new = NewInstance(
        "bench", "wf", "h", b"{}", Status.PENDING, now, owner="w", lease_until=now + 600
    )
    record, _ = await backend.create(new, ConflictPolicy.TERMINATE_EXISTING)
    token = record.claim_token
    payload = b'{"order": 42, "status": "charged", "amount": 19.99}'
    latencies = []
    for n in range(commits + 50):
        events = [
            HistoryEvent("task_started", now, f"s{n}", 1, "w"),
            HistoryEvent("task_completed", now, f"s{n}", 1, "w", {"ms": 1.0}),
        ]
        write = StepWrite(
            Status.RUNNING, {"attempts": {}}, now, [(f"s{n}", payload)], events=events
        )
        started = time.perf_counter()
        await backend.commit("bench", token, write)
        if n >= 50:  # the first ones prepare statements and warm caches
            latencies.append(time.perf_counter() - started)
    return latencies


async def round_trips(url: str, count: int) -> list[float]:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetchval("SELECT 1")
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await conn.close()


def row(name: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return (
        f"{name:<34}{statistics.median(ms):>8.3f}{p(0.9):>8.3f}{p(0.99):>8.3f}"
        f"{statistics.fmean(ms):>8.3f}{1000 / statistics.fmean(ms):>10.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get(
            "SAYIIR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--commits", type=int, default=2000)
    args = parser.parse_args()

    results = {"SELECT 1 (asyncpg, floor)": await round_trips(args.url, args.commits)}
    postgres = PostgresBackend(args.url, schema=SCHEMA, min_size=1, max_size=1)
    await postgres.open()
    try:
        results["PostgresBackend.commit"] = await commit_latencies(postgres, args.commits)
    finally:
        await postgres.close()
        conn = await asyncpg.connect(args.url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("FULL", "NORMAL"):
            sqlite = SqliteBackend(Path(tmp) / f"{mode}.db", synchronous=mode)
            await sqlite.open()
            results[f"SqliteBackend.commit ({mode})"] = await commit_latencies(sqlite, args.commits)
            await sqlite.close()

    print(f"\n{args.commits} sequential commits of one checkpoint + two events, ms\n")
    print(f"{'':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}{'per s':>10}")
    for name, latencies in results.items():
        print(row(name, latencies))


if __name__ == "__main__":
    asyncio.run(main())
