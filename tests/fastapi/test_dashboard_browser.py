"""One real browser: headless Chromium opens the dashboard and sees it update live.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skips
without them unless ``SAYIIR_REQUIRE_SERVICES=1``. The app runs under a real uvicorn.
Screenshots go to the test's directory; with ``SAYIIR_UPDATE_SCREENSHOTS=1`` they are
copied into ``docs/integrations/img/`` for the docs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless_chromium import chromium, shot
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

COUNTS = (
    "return [...document.querySelectorAll('.count')]"
    ".map(c => [c.dataset.status, c.querySelector('.number').textContent])"
)
ROWS = "return [...document.querySelectorAll('tr[data-instance]')].map(r => r.dataset.instance)"
BADGE = "return document.querySelector('.head .badge').dataset.status"
STATES = (
    "return Object.fromEntries([...document.querySelectorAll('.sayiir-step')]"
    ".map(s => [s.dataset.step, s.dataset.state]))"
)
LIVE = "return document.querySelector('.live').classList.contains('on')"

# A real browser and a real server: generous under a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium("1360,980") as driver:
        yield driver


def submit(url: str, workflow: str, instance_id: str, value: Any) -> None:
    response = httpx.post(
        f"{url}/sayiir/workflows/{workflow}/instances",
        json={"instance_id": instance_id, "input": value},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def wait_for(url: str, instance_id: str, wanted: str) -> None:
    result = httpx.get(f"{url}/sayiir/instances/{instance_id}/result?timeout=30", timeout=40)
    assert result.json()["status"] == wanted, result.text


def test_the_dashboard_lists_instances_and_updates_live(
    browser: webdriver.Chrome,
    start_uvicorn: Callable[..., Any],
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    server = start_uvicorn({"SAYIIR_TEST_DATABASE_URL": f"sqlite:///{tmp_path / 'ui.db'}"})
    url = server.url
    for number in range(1, 4):
        submit(url, "checkout", f"order-{number}", {"id": number, "amount": 10 * number})
    submit(url, "failing", "refund-9", {"reason": "duplicate"})
    submit(url, "approval", "expense-4", {"amount": 120})
    submit(url, "fulfilment", "order-1001", {"id": 1001, "amount": 59.9})
    for number in range(1, 4):
        wait_for(url, f"order-{number}", "completed")
    httpx.get(f"{url}/sayiir/instances/refund-9/result?timeout=30", timeout=40)
    submit(url, "gate_flow", "import-12", {"file": str(gate)})
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda _: Path(str(gate) + ".started").exists())

    # The list: counts per status, failures first, and a row per instance.
    browser.get(f"{url}/sayiir/ui/")
    # Read in one script each: the live list may swap its fragment between two reads.
    counts = browser.execute_script(COUNTS)
    assert counts[0][0] == "failed"
    by_status = dict(counts)
    assert by_status["completed"] == "3"
    assert by_status["failed"] == "1"
    assert by_status["running"] == "1"
    assert set(browser.execute_script(ROWS)) >= {"order-1", "refund-9", "import-12"}
    # Live: an instance submitted elsewhere appears without a reload.
    browser.execute_script("window.notReloaded = true")
    submit(url, "checkout", "order-4", {"id": 4, "amount": 40})
    wait.until(lambda driver: "order-4" in driver.execute_script(ROWS))
    assert browser.execute_script("return window.notReloaded") is True
    wait_for(url, "order-4", "completed")
    shot(browser, tmp_path, "dashboard-list.png")

    # An instance page: running, then completed live when its step is let through.
    browser.get(f"{url}/sayiir/ui/instances/import-12")
    assert browser.execute_script(BADGE) == "running"
    assert browser.execute_script(STATES)["gated"] == "running"
    wait.until(lambda driver: driver.execute_script(LIVE))
    browser.execute_script("window.notReloaded = true")
    gate.touch()
    wait.until(lambda driver: driver.execute_script(BADGE) == "completed")
    assert browser.execute_script("return window.notReloaded") is True
    assert browser.execute_script(STATES) == {"gated": "completed", "after_gate": "completed"}
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('.timeline li')].map(li => li.dataset.kind)"
    )
    assert kinds[0] == "completed"

    browser.get(f"{url}/sayiir/ui/instances/refund-9")
    assert "ValueError: card declined" in browser.find_element(By.CSS_SELECTOR, ".error-line").text
    assert browser.execute_script(STATES) == {"explode": "failed"}
    shot(browser, tmp_path, "dashboard-failed.png")

    browser.get(f"{url}/sayiir/ui/instances/order-1001")
    wait.until(lambda driver: driver.execute_script(STATES).get("merge") == "completed")
    assert "dispatch" in browser.find_element(By.CSS_SELECTOR, ".waiting").text
    assert browser.execute_script(STATES)["await_dispatch"] == "awaiting_signal"
    shot(browser, tmp_path, "dashboard-instance.png")
    # An action from the page: the signal form sends it, the page shows the outcome.
    browser.find_element(By.NAME, "payload").send_keys('{"approved_by": "maria"}')
    browser.find_element(By.XPATH, "//button[text()='Send signal']").click()
    wait.until(lambda driver: "sent" in driver.find_element(By.CSS_SELECTOR, ".flash").text)
    wait_for(url, "order-1001", "completed")
    server.stop_gracefully()
