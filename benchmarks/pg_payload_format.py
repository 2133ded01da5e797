"""JSONB or BYTEA for checkpoint payloads? Times both on the PostgreSQL at hand.

    python benchmarks/pg_payload_format.py [postgresql://...] [--rows 300] [--kb 100]

Inserts ``--rows`` JSON documents of about ``--kb`` KB one statement at a time (as
commits write them), then reads each back by key, for: ``jsonb`` (the server parses on
write and re-serialises on read), ``json`` (validated on write, stored as text),
``bytea`` with the default TOAST compression (pglz), ``bytea`` with lz4 compression
(PostgreSQL 14+ built with lz4) and ``bytea`` stored uncompressed (``STORAGE
EXTERNAL``). Prints per-row latency and the size on disk. Uses (and drops) a scratch
schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import time
from typing import Any

import asyncpg

SCHEMA = "sayiir_bench_payload"
VARIANTS: dict[str, str] = {
    "jsonb": "payload jsonb NOT NULL",
    "json": "payload json NOT NULL",
    "bytea (pglz)": "payload bytea NOT NULL",
    "bytea (lz4)": "payload bytea COMPRESSION lz4 NOT NULL",
    "bytea (uncompressed)": "payload bytea NOT NULL",
}


def document(kb: int, seed: int) -> bytes:
    """A JSON object of about ``kb`` KB: records with ids, words, numbers, nesting."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(400)]
    items: list[dict[str, Any]] = []
    encoded = b""
    while len(encoded) < kb * 1024:
        items.extend(
            {
                "id": rng.randint(1, 10**9),
                "name": " ".join(rng.choices(words, k=3)),
                "price": round(rng.uniform(1, 500), 2),
                "tags": rng.sample(words, 3),
                "stock": {"warehouse": rng.choice(words), "count": rng.randint(0, 999)},
            }
            for _ in range(50)
        )
        encoded = json.dumps({"items": items}, separators=(",", ":")).encode()
    return encoded


async def run_variant(
    conn: asyncpg.Connection, name: str, column: str, docs: list[bytes]
) -> dict[str, float]:
    table = f"{SCHEMA}.t_{abs(hash(name)) % 10**6}"
    await conn.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, {column})")
    if "uncompressed" in name:
        await conn.execute(f"ALTER TABLE {table} ALTER COLUMN payload SET STORAGE EXTERNAL")
    is_json = name in ("json", "jsonb")
    insert = f"INSERT INTO {table} (k, payload) VALUES ($1, $2)"
    select = f"SELECT payload FROM {table} WHERE k = $1"
    values = [d.decode() if is_json else d for d in docs]
    await conn.execute(insert, "warm", values[0])
    await conn.fetchval(select, "warm")

    writes = []
    for n, value in enumerate(values):
        started = time.perf_counter()
        await conn.execute(insert, f"k{n}", value)
        writes.append(time.perf_counter() - started)
    reads = []
    for n in range(len(values)):
        started = time.perf_counter()
        payload = await conn.fetchval(select, f"k{n}")
        reads.append(time.perf_counter() - started)
        # What the codec does next either way: turn the value back into Python objects.
        json.loads(payload)
    size = await conn.fetchval(f"SELECT pg_total_relation_size('{table}')")
    return {
        "write_ms": statistics.median(writes) * 1000,
        "read_ms": statistics.median(reads) * 1000,
        "mb": size / 1024 / 1024,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get(
            "SAYIIR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--kb", type=int, default=100)
    args = parser.parse_args()

    docs = [document(args.kb, seed) for seed in range(args.rows)]
    conn = await asyncpg.connect(args.url)
    try:
        version = await conn.fetchval("SHOW server_version")
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        results: dict[str, dict[str, float]] = {}
        for name, column in VARIANTS.items():
            try:
                results[name] = await run_variant(conn, name, column, docs)
            except asyncpg.PostgresError as exc:  # e.g. a server built without lz4
                print(f"{name}: skipped ({exc})")
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()

    raw_mb = sum(map(len, docs)) / 1024 / 1024
    print(
        f"\nPostgreSQL {version}: {args.rows} JSON documents of ~{args.kb} KB "
        f"({raw_mb:.1f} MB raw), one statement per row, medians\n"
    )
    print(f"{'format':<22}{'insert ms/row':>15}{'read+decode ms/row':>20}{'on disk MB':>12}")
    for name, result in results.items():
        print(
            f"{name:<22}{result['write_ms']:>15.3f}{result['read_ms']:>20.3f}{result['mb']:>12.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
