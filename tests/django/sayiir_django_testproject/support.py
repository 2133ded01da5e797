"""Helpers for the tests: PostgreSQL availability, backends, subprocess environments."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

HERE = Path(__file__).resolve().parent.parent
ROOT = HERE.parent.parent


def require_postgres() -> None:
    """Skip the calling test module when PostgreSQL is unreachable (fail on CI)."""
    import psycopg

    database = settings.DATABASES["postgres"]
    try:
        psycopg.connect(
            host=database["HOST"],
            port=database["PORT"],
            user=database["USER"],
            password=database["PASSWORD"],
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at {database['HOST']}:{database['PORT']} ({exc})"
        if os.environ.get("SAYIIR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (SAYIIR_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(
            f"{reason}; set SAYIIR_REQUIRE_SERVICES=1 to make this a failure",
            allow_module_level=True,
        )


def subprocess_env(alias: str, **extra: str) -> dict[str, str]:
    """The environment of a ``manage.py`` subprocess on this run's test database ``alias``."""
    env = dict(os.environ)
    name = str(connections[alias].settings_dict["NAME"])
    env["SAYIIR_DJANGO_DATABASE"] = alias
    if alias == "postgres":
        env["SAYIIR_DJANGO_POSTGRES"] = name
    else:
        env["SAYIIR_DJANGO_SQLITE"] = name
    env["DJANGO_SETTINGS_MODULE"] = "sayiir_django_testproject.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def manage(*args: str) -> list[str]:
    """The command line of ``manage.py <args>`` (the settings come from the environment)."""
    return [sys.executable, "-m", "django", *args]
