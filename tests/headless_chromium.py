"""Debian's headless Chromium for the one real-browser check of each page people look at.

Shared by the dashboard (tests/fastapi) and the admin (tests/django) checks. Needs the
``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them); without them
the check skips, or fails under ``SAYIIR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from sayiir_core.testing.postgres import service_unavailable

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "img"

# Without the background-networking flags Chromium keeps dialling out, and this machine's
# closed network refuses it; a fresh profile per run keeps runs independent.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


@contextmanager
def chromium(window_size: str) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a window of ``window_size`` (``"1360,980"``)."""
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        service_unavailable(
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    profile = tempfile.mkdtemp(prefix="sayiir-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*_FLAGS, f"--window-size={window_size}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: webdriver.Chrome, directory: Path, name: str) -> None:
    """The whole page as a PNG (Chromium's DevTools protocol can go past the window).

    With ``SAYIIR_UPDATE_SCREENSHOTS=1`` it is also copied into the docs' images.
    """
    path = directory / name
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    image = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(image["data"]))
    if os.environ.get("SAYIIR_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)
