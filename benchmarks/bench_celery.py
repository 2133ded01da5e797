"""The peer Celery, with Redis as broker and result backend: a task queue, not durable.

Workflows are Celery canvases: S1/S2/S6 a ``chain`` of 10 tasks, S3 a chain into a
``chord`` (group of 10, then a join task), S4 a chain of 3, S5 a ``group`` of one task
per item. One worker process (``--pool=solo``, the fastest pool we tried for trivial
tasks) is started and stopped by this module; results are read through the Redis result
backend. Nothing here survives a broker or worker crash mid-chain, so these rows are a
speed reference, not a like-for-like durability comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    CHAIN_LENGTH,
    FORK_WIDTH,
    OBSERVE_INTERVAL,
    PAYLOAD_STEPS,
    Reporter,
    Result,
    Row,
    Settings,
    Shapes,
    measure_s2,
    measure_s6,
    package_version,
    run_id,
    run_sequential,
    versioned,
    wait_until,
)

SYSTEM = "celery"
POOL = "solo"
RESULT_TIMEOUT = 120.0
ROWS = [
    Row(
        SYSTEM,
        "redis",
        f"{versioned('celery')}, Redis, not durable",
        ("S1", "S2", "S3", "S4", "S5", "S6"),
    )
]
HERE = Path(__file__).resolve().parent


def available() -> str:
    if package_version("celery") == "not installed" or package_version("redis") == "not installed":
        return "celery[redis] not installed; pip install --group bench"
    return ""


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    os.environ["SAYIIR_BENCH_REDIS_URL"] = settings.redis_url
    from celery import chain, group

    import celery_app as tasks

    tasks.app.backend.client.flushdb()  # the suite's own Redis database index
    inc, total, bump = tasks.inc_task, tasks.total_task, tasks.bump_task
    chain10 = chain(inc.s(0), *(inc.s() for _ in range(CHAIN_LENGTH - 1)))
    fork = chain(inc.s(0), group(inc.s() for _ in range(FORK_WIDTH)), total.s())

    def get(result: Any) -> Any:
        return result.get(timeout=RESULT_TIMEOUT, interval=OBSERVE_INTERVAL)

    def payload(i: int, doc: dict[str, Any]) -> Any:
        return get(chain(bump.s(doc), *(bump.s() for _ in range(PAYLOAD_STEPS - 1)))())

    shapes = Shapes(
        chain=lambda i: get(chain10.apply_async()),
        fork=lambda i: get(fork.apply_async()),
        payload=payload,
        mapper=lambda i, items: get(group(inc.s(x) for x in items).apply_async()),
        notes={
            "S3": "chain(inc, group of 10, total): Celery turns it into a chord",
            "S5": "a group of one task per item",
        },
    )
    tag = run_id()
    note = f"one worker process, --pool={POOL}"
    with worker(settings, tasks.app):
        run_sequential(reporter, settings, shapes)
        if "S2" in row.scenarios:
            reporter.measure(
                "S2",
                lambda: Result(
                    row.key,
                    "S2",
                    measure_s2(lambda _: chain10.apply_async(), get, settings, tag),
                    note,
                ),
            )
        if "S6" in row.scenarios:
            reporter.measure(
                "S6",
                lambda: Result(
                    row.key,
                    "S6",
                    measure_s6(lambda _: chain10.apply_async(), get, settings, tag),
                    note,
                ),
            )


@contextmanager
def worker(settings: Settings, app: Any) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(settings.work_dir) / "celery-worker.log"
    env = {**os.environ, "SAYIIR_BENCH_REDIS_URL": settings.redis_url}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_app",
        "worker",
        f"--pool={POOL}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=bench-{os.getpid()}@%h",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:

            def answers() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"celery worker exited with {proc.returncode}; see {log}")
                return bool(app.control.ping(timeout=0.5))

            wait_until(answers, timeout=60, interval=0.1)
            yield proc
        finally:
            proc.terminate()  # warm shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
