"""examples/django_shop runs as its README says: migrate, place an order, run a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_shop"

pytestmark = [pytest.mark.slow]


def run(tmp_path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "SHOP_DATABASE": str(tmp_path / "shop.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "shop_project.settings",
        "PYTHONPATH": str(EXAMPLE.parents[1]),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_an_order_is_checked_out_by_the_worker(tmp_path: Path) -> None:
    run(tmp_path, "migrate", "-v0")
    run(tmp_path, "check", "--fail-level", "WARNING")
    placed = run(
        tmp_path,
        "shell",
        "-c",
        "from django.test import Client; "
        "r = Client().post('/orders/', {'items': 3, 'email': 'ann@example.com'}); "
        "print(r.status_code, r.content.decode())",
    )
    assert placed.strip().endswith('201 {"order": 1, "instance": "order-1"}')

    run(tmp_path, "sayiir", "worker", "--max-steps", "3")

    shown = run(
        tmp_path,
        "shell",
        "-c",
        "from django.test import Client; print(Client().get('/orders/1/').content.decode())",
    )
    status = json.loads(shown.strip().splitlines()[-1])
    assert (status["order_status"], status["checkout"]) == ("shipped", "completed")
    assert status["output"] == {"order": 1, "charged": 36, "shipped": True}
    assert "order-1   checkout  completed" in run(tmp_path, "sayiir", "list")
