"""``get_client()`` and ``submit_on_commit`` on PostgreSQL, and NOTIFY sent at commit."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connections, transaction
from sayiir_django_testproject.client_suite import ClientTests
from sayiir_django_testproject.shop.workflows import doubling
from sayiir_django_testproject.support import require_postgres

from sayiir_django import get_client
from sayiir_django._wakeups import WORK_CHANNEL

require_postgres()

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(
        transaction=True, databases=["postgres"], available_apps=["sayiir_django"]
    ),
]


class TestClientOnPostgres(ClientTests):
    alias = "postgres"


def test_other_processes_hear_of_a_submit_when_it_commits() -> None:
    params = connections["postgres"].get_connection_params()
    with psycopg.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        dbname=params["dbname"],
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {WORK_CHANNEL}")
        client = get_client("postgres")
        try:
            with transaction.atomic(using="postgres"):
                client.submit(doubling, "heard-1", 1)
                assert list(listener.notifies(timeout=0.5)) == []
            heard = list(listener.notifies(timeout=5, stop_after=1))
        finally:
            client.close()
    assert [note.channel for note in heard] == [WORK_CHANNEL]
