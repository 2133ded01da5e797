"""``examples/celery_bridge`` run as a user runs it: ``python run.py`` starts a real
``celery worker`` (prefork, two processes) and submits five orders through the bridge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from celery_fleet import REPO_ROOT

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

EXAMPLE = REPO_ROOT / "examples" / "celery_bridge"


def test_the_example_completes_every_order(
    broker: tuple[str, str], postgres_schema: tuple[str, str]
) -> None:
    url, prefix = broker
    database, schema = postgres_schema
    env = dict(os.environ)
    # Celery loads Django's settings whenever this is set (tests/django's conftest sets it).
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        SAYIIR_EXAMPLE_BROKER=url,
        SAYIIR_EXAMPLE_KEY_PREFIX=prefix,
        SAYIIR_EXAMPLE_DB=database,
        SAYIIR_EXAMPLE_SCHEMA=schema,
    )

    # Its own session: if it hangs, its worker goes down with it.
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "run.py")],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode == 0, stdout + stderr
    results = [line for line in stdout.splitlines() if " -> " in line]
    assert len(results) == 5, stdout
    for n, line in enumerate(results):
        assert line.endswith(f"-> shipped (charged {10 * (n + 1)} EUR, mailed customer-{n})"), line
    assert "5 orders completed" in stdout
