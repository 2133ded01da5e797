"""One real browser: headless Chromium logs in to the admin, opens the list and an instance,
and cancels an instance with the admin action.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skips
without them unless ``SAYIIR_REQUIRE_SERVICES=1``. The admin runs on pytest-django's live
server. Screenshots go to the test's directory; with ``SAYIIR_UPDATE_SCREENSHOTS=1`` they
are copied into ``docs/integrations/img/`` for the docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from headless_chromium import chromium, shot
from pytest_django.live_server_helper import LiveServer
from sayiir_django_testproject.shop.workflows import approval, checkout, doubling
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from sayiir_core import run_durable_workflow
from sayiir_django import get_client
from sayiir_django.backend import DjangoBackend
from sayiir_django.models import WorkflowInstance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium("1680,900") as driver:
        yield driver


def some_instances() -> None:
    """Instances in several states, run for real."""
    backend = DjangoBackend("default")
    for n in (1, 2, 3):
        run_durable_workflow(checkout, f"order-{n}", {"items": n}, backend=backend)
    run_durable_workflow(doubling, "import-7", "not a number", backend=backend)  # fails
    run_durable_workflow(approval, "expense-4", 120, backend=backend)  # waits for a signal
    client = get_client("default")
    client.submit(checkout, "order-4", {"items": 4})
    client.submit(checkout, "order-5", {"items": 5})
    client.pause("order-5", reason="stock check")
    client.close()


def test_the_admin_lists_shows_and_cancels_instances(
    browser: webdriver.Chrome, live_server: LiveServer, tmp_path: Path
) -> None:
    User.objects.create_superuser("ops", password="sayiir-ops")
    some_instances()
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)

    browser.get(f"{live_server.url}/admin/sayiir_django/workflowinstance/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("sayiir-ops")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#result_list"))

    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 7
    badges = [badge.text for badge in browser.find_elements(By.CSS_SELECTOR, ".sayiir-badge")]
    assert sorted(set(badges)) == ["Awaiting signal", "Completed", "Failed", "Paused", "Queued"]
    shot(browser, tmp_path, "django-admin-list.png")

    browser.find_element(By.LINK_TEXT, "order-2").click()
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, ".sayiir-graph-box svg"))
    assert "Workflow instance order-2" in browser.title
    assert browser.find_elements(By.XPATH, "//h3[text()='write_receipt']")
    shot(browser, tmp_path, "django-admin-instance.png")

    browser.get(f"{live_server.url}/admin/sayiir_django/workflowinstance/")
    order_4 = WorkflowInstance.objects.get(instance_id="order-4").pk
    browser.find_element(By.CSS_SELECTOR, f"input.action-select[value='{order_4}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("cancel_instances")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, ".messagelist"))

    assert "1 instance cancelled" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert WorkflowInstance.objects.get(instance_id="order-4").status == "cancelled"
