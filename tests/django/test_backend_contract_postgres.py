"""The backend contract suite of ``sayiir_core.testing`` on ``DjangoBackend``, on PostgreSQL."""

from __future__ import annotations

import pytest
from sayiir_django_testproject.support import require_postgres

from sayiir_core.testing import BackendFactory, BackendSuite
from sayiir_django.backend import DjangoBackend

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(
        transaction=True, databases=["postgres"], available_apps=["sayiir_django"]
    ),
]


class TestDjangoBackendOnPostgres(BackendSuite):
    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        return lambda: DjangoBackend("postgres")
