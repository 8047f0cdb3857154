"""Debian's Chromium driven by Selenium, for the web app's tests.

Selenium is pointed at the system chromedriver (its own manager would try to download
one), and Chromium starts headless with a fresh profile and everything that would
reach the network turned off.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from waiting import wait_until

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
PHONE = (390, 844)
DESKTOP = (1280, 800)


def available() -> str | None:
    """None when the browser tests can run, else why not."""
    for path in (CHROMEDRIVER, CHROMIUM):
        if not path.exists():
            return f"{path} is missing: `make test` installs chromium and chromium-driver"
    return None


class Browser:
    """One headless Chromium window with its own throwaway profile."""

    def __init__(self, size: tuple[int, int] = DESKTOP) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="ghostline-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={self.profile}",
            f"--window-size={size[0]},{size[1]}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        self.driver.set_window_size(*size)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, check: Callable[[], object], what: str, timeout: float = 30) -> None:
        wait_until(check, timeout, what)

    def texts(self, css: str) -> list[str]:
        """textContent of every match (not .text: that hides what CSS hides)."""
        return list(self.js(f"return Array.from(document.querySelectorAll({css!r}))"
                            ".map(e => e.textContent)"))  # fmt: skip

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
