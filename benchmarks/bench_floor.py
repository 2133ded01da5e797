"""The floor: what one durable write costs on each database, with no engine around it.

A single-row upsert committed on its own (autocommit), timed one after another:
PostgreSQL through asyncpg (also 16 connections at once, for a throughput ceiling) and
SQLite in WAL mode with ``synchronous=FULL`` (the settings ``SqliteBackend`` uses).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from common import Reporter, Result, Row, Settings, summarize_ms, time_runs

SYSTEM = "floor"
PG_DATABASE = "sayiir_bench"
PG_CONNECTIONS = 16

ROWS = [
    Row(
        SYSTEM,
        "postgres",
        "floor: upsert commit, PostgreSQL (asyncpg)",
        ("floor",),
        setup="one asyncpg connection, one single-row upsert per commit (16 for the rate)",
    ),
    Row(
        SYSTEM,
        "sqlite",
        "floor: upsert commit, SQLite WAL, synchronous=FULL",
        ("floor",),
        setup="sqlite3, WAL, synchronous=FULL, one single-row upsert per commit",
    ),
]

_UPSERT_PG = (
    "INSERT INTO floor_upsert (id, value) VALUES ($1, $2) "
    "ON CONFLICT (id) DO UPDATE SET value = excluded.value"
)
_UPSERT_SQLITE = (
    "INSERT INTO floor_upsert (id, value) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET value = excluded.value"
)


def available() -> str:
    return ""


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    if "floor" not in row.scenarios:
        return
    if row.backend == "postgres":
        reporter.measure("floor", lambda: asyncio.run(postgres_floor(row, settings)))
    else:
        reporter.measure("floor", lambda: sqlite_floor(row, settings))


def _no_check(_: object) -> None:
    return None


async def postgres_floor(row: Row, settings: Settings) -> Result:
    import asyncpg

    url = settings.pg_database_url(PG_DATABASE)
    pool = await asyncpg.create_pool(url, min_size=PG_CONNECTIONS, max_size=PG_CONNECTIONS)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS floor_upsert (id int PRIMARY KEY, value int NOT NULL)"
            )
            # Timed from a worker thread's loop would add a hop; time the awaits directly.
            samples: list[int] = []
            count = 300 if settings.quick else 3000
            for i in range(count + 50):
                start = time.perf_counter_ns()
                await conn.execute(_UPSERT_PG, i % 100, i)
                if i >= 50:
                    samples.append(time.perf_counter_ns() - start)
        metrics = summarize_ms(samples)
        metrics["commits_per_s"] = await _pg_rate(pool, 0.5 if settings.quick else 3.0)
        note = f"S2 column: upserts/s over {PG_CONNECTIONS} connections, each on its own row"
        return Result(row.key, "floor", metrics, note=note)
    finally:
        await pool.close()


async def _pg_rate(pool: object, seconds: float) -> float:
    import asyncpg

    assert isinstance(pool, asyncpg.Pool)
    deadline = time.perf_counter() + seconds
    counts = [0] * PG_CONNECTIONS

    async def writer(n: int) -> None:
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                await conn.execute(_UPSERT_PG, 1000 + n, counts[n])
                counts[n] += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(PG_CONNECTIONS)))
    return sum(counts) / (time.perf_counter() - start)


def sqlite_floor(row: Row, settings: Settings) -> Result:
    path = Path(settings.work_dir) / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS floor_upsert (id INTEGER PRIMARY KEY, value INT)")
        samples = time_runs(
            lambda i: conn.execute(_UPSERT_SQLITE, (i % 100, i)),
            _no_check,
            warmup=50,
            min_iters=300 if settings.quick else 3000,
            max_iters=300 if settings.quick else 3000,
            budget_s=0,
        )
    finally:
        conn.close()
    metrics = summarize_ms(samples)
    metrics["commits_per_s"] = len(samples) / (sum(samples) / 1e9)
    return Result(row.key, "floor", metrics, note="S2 column: one writer, commits back to back")
