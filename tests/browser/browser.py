"""Headless Chromium for the page's tests and its screenshot: Debian's chromium and chromium-driver driven by
Selenium, with the driver's path given explicitly so that Selenium Manager never downloads anything."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def missing() -> str | None:
    """Why a browser cannot start here, or None."""
    if shutil.which("chromium") is None and not CHROMIUM.exists():
        return "chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)"
    if not CHROMEDRIVER.exists():
        return "chromedriver is not installed (apt-get install chromium-driver; .ci/run does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def chrome(width: int = 1400, height: int = 1600, network_log: bool = False):
    """A headless Chromium that keeps the page's console log (and with `network_log` every request it makes, which
    `requested_urls` reads)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", **({"performance": "ALL"} if network_log else {})})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait_for(driver, script: str, timeout_s: float = 30.0):
    """Polls a JavaScript expression until it is truthy and returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))


def page_ready(driver, timeout_s: float = 60.0) -> None:
    """Waits until the map has its points (or its no-embedding message) and the samples are drawn."""
    wait_for(driver, "window.explorer && (window.explorer.map.labels.length > 0 || "
                     "!document.getElementById('map-empty').hidden && "
                     "!document.getElementById('map-empty').textContent.startsWith('Loading'))", timeout_s)
    wait_for(driver, "document.querySelectorAll('.loading').length === 0", timeout_s)


def requested_urls(driver) -> list[str]:
    """Every URL the browser sent a request for since the last call (a driver from `chrome(network_log=True)`);
    requests the page's Content-Security-Policy blocked never leave the browser and are not counted."""
    import json

    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    blocked = {e["params"]["requestId"] for e in events
               if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason")}
    return [e["params"]["request"]["url"] for e in events
            if e["method"] == "Network.requestWillBeSent" and e["params"]["requestId"] not in blocked]


def severe_console_errors(driver) -> list[dict]:
    """The log's errors, less network errors of another origin: a page of an earlier test, whose server has stopped,
    may have polled it (/models, every few seconds) before this test navigated away."""
    origin = driver.execute_script("return location.origin")

    def elsewhere(entry: dict) -> bool:
        return entry["source"] == "network" and entry["message"].startswith("http") and \
            not entry["message"].startswith(origin + "/")

    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE" and not elsewhere(entry)]


def draw_stroke(driver, element, points: list[tuple[int, int]]) -> None:
    """A pointer stroke through `points` (pixels from the element's centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    actions = ActionChains(driver, duration=20)
    actions.move_to_element_with_offset(element, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()


def hover(driver, element, x: int, y: int) -> None:
    """Moves the pointer to (x, y) pixels from the element's centre, no button pressed."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element_with_offset(element, x, y).perform()
