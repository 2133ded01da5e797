"""``get_client()`` and ``submit_on_commit`` on SQLite: both outcomes of a transaction."""

from __future__ import annotations

import pytest
from sayiir_django_testproject.client_suite import ClientTests
from sayiir_django_testproject.shop.workflows import doubling

from sayiir_core import WorkflowClient
from sayiir_django import get_client
from sayiir_django.client import DjangoWorkflowClient

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"], available_apps=["sayiir_django"])
]


class TestClientOnSqlite(ClientTests):
    alias = "default"


def test_the_client_overrides_every_method_of_workflow_client() -> None:
    """A method inherited unchanged would run on the loop thread, outside the caller's
    transaction (and, on SQLite, wait for the caller's own write lock)."""
    public = {
        name
        for name, value in vars(WorkflowClient).items()
        if not name.startswith("_") and callable(value)
    }
    inherited = {name for name in public if name not in vars(DjangoWorkflowClient)}
    assert not inherited, f"DjangoWorkflowClient does not override {sorted(inherited)}"


@pytest.mark.django_db(transaction=False)
def test_a_plain_db_test_sees_what_it_submits() -> None:
    """As docs/integrations/django.md says: the client runs on the test's connection."""
    client = get_client("default")
    try:
        client.submit(doubling, "in-test-1", 1)
        assert client.status("in-test-1").status == "in_progress"
        assert [s.instance_id for s in client.list_instances()] == ["in-test-1"]
    finally:
        client.close()
