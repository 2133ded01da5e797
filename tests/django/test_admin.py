"""The admin through Django's test client: list, instance page, actions, permissions."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse
from pytest_django import DjangoAssertNumQueries
from sayiir_django_testproject.shop.workflows import approval, doubling

from sayiir_core import run_durable_workflow
from sayiir_django import get_client
from sayiir_django.backend import DjangoBackend
from sayiir_django.client import DjangoWorkflowClient
from sayiir_django.models import WorkflowInstance

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default"])]

LIST = reverse("admin:sayiir_django_workflowinstance_changelist")


def page(instance_id: str) -> str:
    pk = WorkflowInstance.objects.get(instance_id=instance_id).pk
    return reverse("admin:sayiir_django_workflowinstance_change", args=[pk])


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="sayiir_django", codename=codename)
        )
    return user


def logged_in(user: User) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def client() -> Iterator[DjangoWorkflowClient]:
    client = get_client("default")
    yield client
    client.close()


@pytest.fixture
def admin_browser() -> Client:
    return logged_in(User.objects.create_superuser("root", password="pw"))


@pytest.fixture
def finished() -> str:
    """A completed instance, run for real (its checkpoints and history written)."""
    backend = DjangoBackend("default")
    status = run_durable_workflow(doubling, "done-1", 20, backend=backend)
    assert status.status == "completed"
    return "done-1"


def action(browser: Client, action_name: str, *instance_ids: str, **fields: str) -> str:
    pks = WorkflowInstance.objects.filter(instance_id__in=instance_ids).values_list("pk", flat=True)
    response = browser.post(
        LIST,
        {"action": action_name, "_selected_action": [str(pk) for pk in pks], **fields},
        follow=True,
    )
    assert response.status_code == 200
    return response.content.decode()


# -- who may see what -------------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_the_login_page() -> None:
    response = Client().get(LIST)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_view_permission_is_refused() -> None:
    assert logged_in(staff("nobody")).get(LIST).status_code == 403


def test_staff_with_only_the_view_permission_sees_pages_and_no_actions(
    client: DjangoWorkflowClient, finished: str
) -> None:
    browser = logged_in(staff("viewer", "view_workflowinstance"))

    listing = browser.get(LIST)
    assert listing.status_code == 200
    assert "done-1" in listing.content.decode()
    assert 'name="action"' not in listing.content.decode()
    assert browser.get(page(finished)).status_code == 200
    # Posting an action anyway changes nothing.
    client.submit(doubling, "open-1", 1)
    action(browser, "cancel_instances", "open-1")
    assert client.status("open-1").status == "in_progress"


def test_each_action_needs_its_own_permission() -> None:
    browser = logged_in(staff("operator", "view_workflowinstance", "cancel_workflowinstance"))

    html = browser.get(LIST).content.decode()

    assert 'value="cancel_instances"' in html
    for other in ("pause_instances", "unpause_instances", "retry_instances", "signal_instances"):
        assert f'value="{other}"' not in html


# -- the list -----------------------------------------------------------------------------


def test_the_list_costs_a_fixed_number_of_queries(
    client: DjangoWorkflowClient,
    admin_browser: Client,
    django_assert_max_num_queries: DjangoAssertNumQueries,
) -> None:
    for n in range(40):
        client.submit(doubling if n % 2 else approval, f"order-{n}", n)

    with django_assert_max_num_queries(10):
        response = admin_browser.get(LIST)

    html = response.content.decode()
    assert html.count('class="sayiir-badge"') == 40
    assert "order-39" in html


def test_the_list_filters_by_status_workflow_date_and_searches_ids(
    client: DjangoWorkflowClient, admin_browser: Client
) -> None:
    client.submit(doubling, "order-1", 1)
    client.submit(approval, "order-2", 2)
    client.submit(approval, "refund-1", 3)
    client.cancel("order-1")
    year = WorkflowInstance.objects.get(instance_id="order-1").created.year

    def ids(query: str) -> set[str]:
        html = admin_browser.get(f"{LIST}?{query}").content.decode()
        return {i for i in ("order-1", "order-2", "refund-1") if f">{i}</a>" in html}

    assert ids("status=cancelled") == {"order-1"}
    assert ids("workflow_id=approval") == {"order-2", "refund-1"}
    assert ids("q=order") == {"order-1", "order-2"}
    assert ids(f"created__year={year}") == {"order-1", "order-2", "refund-1"}
    assert ids(f"created__year={year - 1}") == set()


# -- the instance page ----------------------------------------------------------------------


def test_the_instance_page_shows_payloads_history_checkpoints_and_the_graph(
    admin_browser: Client, finished: str
) -> None:
    html = admin_browser.get(page(finished)).content.decode()

    assert "Workflow instance done-1" in html
    assert "<svg" in html
    assert "Workflow doubling" in html
    assert "#16a34a" in html  # completed steps are drawn green
    assert "Completed" in html
    assert "<h3>Input</h3>\n  <pre>20</pre>" in html
    assert "<h3>Output</h3>\n  <pre>41</pre>" in html
    assert "<h3>double</h3>" in html
    assert "<h3>add_one</h3>" in html
    assert "double completed" in html
    assert "add_one completed" in html


def test_large_payloads_are_cut_and_long_histories_link_to_the_rest(
    client: DjangoWorkflowClient, admin_browser: Client
) -> None:
    client.submit(approval, "big-1", {"blob": "x" * 10_000})
    for n in range(5):
        client.send_signal("big-1", "approve", n)

    with override_settings(SAYIIR={"ADMIN_PAYLOAD_CHARS": 100, "ADMIN_HISTORY_LIMIT": 3}):
        html = admin_browser.get(page("big-1")).content.decode()

    assert "more characters not shown" in html
    assert "x" * 101 not in html
    assert "All 6 history entries" in html
    full = admin_browser.get(
        reverse(
            "admin:sayiir_django_workflowinstance_full_history",
            args=[WorkflowInstance.objects.get(instance_id="big-1").pk],
        )
    ).content.decode()
    assert full.count("signal “approve” sent") == 5


def test_an_unknown_instance_is_not_found(admin_browser: Client) -> None:
    url = reverse("admin:sayiir_django_workflowinstance_change", args=[999_999])
    assert admin_browser.get(url).status_code == 404


# -- actions --------------------------------------------------------------------------------


def test_cancel_reports_what_it_did_and_skipped(
    client: DjangoWorkflowClient, admin_browser: Client, finished: str
) -> None:
    client.submit(doubling, "open-1", 1)
    client.submit(doubling, "open-2", 2)

    html = action(admin_browser, "cancel_instances", "open-1", "open-2", finished)

    assert "2 instances cancelled; 1 skipped" in html
    assert client.status("open-1").status == "cancelled"
    assert client.status("open-1").cancelled_by == "admin:root"
    assert client.status(finished).status == "completed"


def test_pause_and_unpause(client: DjangoWorkflowClient, admin_browser: Client) -> None:
    client.submit(doubling, "open-1", 1)

    assert "1 instance paused" in action(admin_browser, "pause_instances", "open-1")
    assert client.status("open-1").status == "paused"
    assert "0 instances paused; 1 skipped" in action(admin_browser, "pause_instances", "open-1")
    assert "1 instance unpaused" in action(admin_browser, "unpause_instances", "open-1")
    assert client.status("open-1").status == "in_progress"


def test_retry_from_asks_for_the_step_then_retries(
    client: DjangoWorkflowClient, admin_browser: Client, finished: str
) -> None:
    form = action(admin_browser, "retry_instances", finished)
    assert "Run again from step" in form
    assert '<option value="add_one">' in form

    done = action(admin_browser, "retry_instances", finished, apply="1", step="add_one")

    assert "1 instance set to run again from add_one" in done
    assert client.status(finished).status == "in_progress"
    assert client.get_task_result(finished, "double") == 40
    assert client.get_task_result(finished, "add_one") is None
    refused = action(admin_browser, "retry_instances", finished, apply="1", step="nope")
    assert "Select a valid choice" in refused


def test_send_signal_validates_the_json_payload(
    client: DjangoWorkflowClient, admin_browser: Client
) -> None:
    client.submit(approval, "wait-1", 1)

    refused = action(
        admin_browser, "signal_instances", "wait-1", apply="1", name="approve", payload="{oops"
    )
    assert "Enter a valid JSON" in refused
    assert [e.kind for e in client.history("wait-1")] == ["started"]

    done = action(
        admin_browser,
        "signal_instances",
        "wait-1",
        apply="1",
        name="approve",
        payload=json.dumps({"by": "ops"}),
    )
    assert "1 instance sent signal “approve”" in done
    assert [e.kind for e in client.history("wait-1")] == ["started", "signal_sent"]
