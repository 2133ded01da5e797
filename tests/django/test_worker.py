"""``manage.py sayiir worker`` subprocesses on SQLite."""

from __future__ import annotations

import pytest
from sayiir_django_testproject.worker_suite import WorkerTests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


class TestWorkerOnSqlite(WorkerTests):
    alias = "default"
