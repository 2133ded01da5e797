"""``manage.py sayiir`` list, status, history and the control actions, on SQLite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from sayiir_django_testproject.shop.workflows import approval, doubling
from sayiir_django_testproject.support import manage, subprocess_env

from sayiir_django import get_client
from sayiir_django.client import DjangoWorkflowClient

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]


@pytest.fixture
def client() -> Iterator[DjangoWorkflowClient]:
    client = get_client("default")
    yield client
    client.close()


def sayiir(*args: str) -> str:
    out = StringIO()
    call_command("sayiir", *args, stdout=out)
    return out.getvalue()


def test_list_shows_instances_newest_first_and_filters(client: DjangoWorkflowClient) -> None:
    client.submit(doubling, "d-1", 1)
    client.submit(approval, "a-1", 2)
    client.cancel("d-1", reason="test")

    lines = sayiir("list").splitlines()
    assert lines[0].split() == ["INSTANCE", "WORKFLOW", "STATUS", "UPDATED"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["a-1", "approval", "in_progress"],
        ["d-1", "doubling", "cancelled"],
    ]
    assert [
        line.split()[0] for line in sayiir("list", "--status", "cancelled").splitlines()[1:]
    ] == ["d-1"]
    assert "more: raise --limit" in sayiir("list", "--limit", "1")


def test_status_history_and_the_control_actions(client: DjangoWorkflowClient) -> None:
    client.submit(approval, "a-2", 2)

    assert sayiir("pause", "a-2", "--reason", "hold").startswith("a-2: paused")
    assert "reason: hold" in sayiir("status", "a-2")
    assert sayiir("unpause", "a-2").startswith("a-2: in_progress")
    assert "signal 'approve' sent to a-2" in sayiir("signal", "a-2", "approve", '{"ok": true}')
    assert sayiir("cancel", "a-2").startswith("a-2: cancelled")

    history = sayiir("history", "a-2").splitlines()
    assert [line.split()[3] for line in history] == [
        "started",
        "paused",
        "unpaused",
        "signal_sent",
        "cancelled",
    ]
    assert '{"name": "approve"}' in history[3]


def test_errors_are_command_errors_with_the_reason(client: DjangoWorkflowClient) -> None:
    client.submit(doubling, "d-2", 1)

    with pytest.raises(CommandError, match="no workflow instance 'nope'"):
        sayiir("status", "nope")
    with pytest.raises(CommandError, match="not JSON"):
        sayiir("signal", "d-2", "go", "{oops")
    with pytest.raises(CommandError, match="no checkpoint"):
        sayiir("retry-from", "d-2", "double")
    with pytest.raises(CommandError, match="not paused"):
        sayiir("unpause", "d-2")


def test_healthcheck_passes_on_a_migrated_database() -> None:
    assert sayiir("healthcheck").startswith("ok")


def test_healthcheck_fails_on_a_database_without_the_tables(tmp_path: object) -> None:
    result = subprocess.run(
        manage("sayiir", "healthcheck", "--settings", "sayiir_django_testproject.settings"),
        env={**subprocess_env("default"), "SAYIIR_DJANGO_SQLITE": f"{tmp_path}/empty.sqlite3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "lacks migrations sayiir_django.0001_initial" in result.stderr
    assert "manage.py migrate sayiir_django" in result.stderr
