"""The Celery app of the benchmark: its worker imports this module (``-A celery_app``).

Kept apart from ``bench_celery`` so the suite can list Celery's rows without importing
Celery. Broker and result backend are Redis (``SAYIIR_BENCH_REDIS_URL``); JSON only.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from common import bump, inc, total

REDIS_URL = os.environ.get("SAYIIR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")

app = Celery("sayiir_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
)


@app.task(name="bench.inc")
def inc_task(x: int) -> int:
    return inc(x)


@app.task(name="bench.total")
def total_task(parts: list[int]) -> int:
    return total(parts)


@app.task(name="bench.bump")
def bump_task(doc: dict[str, Any]) -> dict[str, Any]:
    return bump(doc)
