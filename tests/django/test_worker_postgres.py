"""``manage.py sayiir worker`` subprocesses on PostgreSQL."""

from __future__ import annotations

import pytest
from sayiir_django_testproject.support import require_postgres
from sayiir_django_testproject.worker_suite import WorkerTests

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["postgres"]),
]


class TestWorkerOnPostgres(WorkerTests):
    alias = "postgres"
