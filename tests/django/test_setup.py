"""Installing the app: migrations match the models, system checks, autodiscovery, settings."""

from __future__ import annotations

import re
import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from sayiir_django_testproject.support import manage, subprocess_env

from sayiir_django.checks import check_settings
from sayiir_django.conf import sayiir_settings
from sayiir_django.registry import registry


def check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        manage("check"),
        env=subprocess_env("default", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_the_migrations_match_the_models() -> None:
    # Exits with status 1 (SystemExit) when a model changed without a migration.
    call_command("makemigrations", "sayiir_django", "--check", "--dry-run", verbosity=0)


def test_workflows_are_discovered_from_each_apps_workflows_module() -> None:
    found = registry()
    assert set(found.workflows) == {"doubling", "checkout", "approval"}
    assert found.failures == []
    assert found.duplicates == {}


def test_a_project_set_up_as_documented_passes_the_checks() -> None:
    result = check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_sqlite_without_immediate_transactions_is_warned_with_what_to_set() -> None:
    result = check(SAYIIR_DJANGO_SQLITE_MODE="DEFERRED")

    assert result.returncode == 0  # a warning: the project still runs
    assert "sayiir.W001" in result.stderr
    assert '"transaction_mode": "IMMEDIATE"' in result.stderr


def test_a_workflows_module_that_fails_to_import_is_an_error_with_its_traceback() -> None:
    result = check(SAYIIR_DJANGO_EXTRA_APPS="sayiir_django_testproject.broken")

    assert result.returncode == 1
    assert "sayiir.E002" in result.stderr
    assert "sayiir_django_testproject.broken.workflows failed to import" in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "return 1 / 0" in result.stderr  # the traceback, not just the message


def test_two_workflows_with_one_id_are_an_error() -> None:
    result = check(SAYIIR_DJANGO_EXTRA_APPS="sayiir_django_testproject.twin")

    assert result.returncode == 1
    assert "sayiir.E003" in result.stderr
    assert "'doubling' is defined more than once" in result.stderr
    assert "sayiir_django_testproject.shop.workflows" in result.stderr
    assert "sayiir_django_testproject.twin.workflows" in result.stderr


def test_a_worker_does_not_start_when_a_workflows_module_is_broken() -> None:
    result = subprocess.run(
        manage("sayiir", "worker"),
        env=subprocess_env("default", SAYIIR_DJANGO_EXTRA_APPS="sayiir_django_testproject.broken"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"DATABSE": "default"}, "unknown SAYIIR setting(s) DATABSE"),
        ({"DATABASE": "other"}, "not a key of DATABASES"),
        ({"POLL_INTERVAL": 0}, "POLL_INTERVAL'] must be a positive number"),
        (["default"], "SAYIIR must be a dict"),
    ],
)
def test_bad_settings_are_reported_clearly(value: object, message: str) -> None:
    with override_settings(SAYIIR=value):
        with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
            sayiir_settings()
        (error,) = check_settings()
    assert error.id == "sayiir.E001"


def test_every_setting_has_a_default() -> None:
    with override_settings(SAYIIR=None):
        defaults = sayiir_settings()
    assert defaults.database == "default"
    assert defaults.worker_concurrency == 8
