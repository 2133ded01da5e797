"""The backend contract suite of ``sayiir_core.testing`` on ``DjangoBackend``, on SQLite.

pytest-django's transactional tests commit for real (the backend writes from threads
of its own) and empty the tables after each test: fresh storage, as the suite wants.
"""

from __future__ import annotations

import pytest

from sayiir_core.testing import BackendFactory, BackendSuite
from sayiir_django.backend import DjangoBackend

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]


class TestDjangoBackendOnSqlite(BackendSuite):
    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        return lambda: DjangoBackend("default")
