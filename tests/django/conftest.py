"""Django for the tests in this directory only: settings, databases, helpers.

The tests of the core never import this file, so pytest-django stays idle for them
(it acts only once Django settings exist). Each run gets a SQLite file and a PostgreSQL
database of its own: pytest-django creates ``test_sayiir_django_<random>`` and drops
it at the end; the SQLite files live in a temporary directory removed at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_RUN = secrets.token_hex(4)
_TMP = Path(tempfile.mkdtemp(prefix="sayiir-django-"))
os.environ["SAYIIR_DJANGO_SQLITE"] = str(_TMP / "main.sqlite3")
os.environ["SAYIIR_DJANGO_SQLITE_TEST"] = str(_TMP / f"test_{_RUN}.sqlite3")
os.environ["SAYIIR_DJANGO_POSTGRES_TEST"] = f"test_sayiir_django_{_RUN}"
os.environ["DJANGO_SETTINGS_MODULE"] = "sayiir_django_testproject.settings"

import django  # noqa: E402 - settings must be chosen first

django.setup()


@pytest.fixture(scope="session", autouse=True)
def _remove_the_sqlite_files() -> Iterator[None]:
    yield
    shutil.rmtree(_TMP, ignore_errors=True)
