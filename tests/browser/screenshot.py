"""`python -m tests.browser.screenshot [OUT]` (`make screenshot`): the explorer page over the committed artifacts,
in headless Chromium, after a hover, a drawn digit and an interpolation; saved as docs/img/explorer.png."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.browser.browser import chrome, draw_stroke, hover, missing, page_ready, wait_for
from tests.helpers import ROOT, start_server, stop_server

OUT = ROOT / "docs" / "img" / "explorer.png"
# A "2": a hook, a diagonal and a base, in pixels from the pad's centre.
TWO = [(-50, -50), (-25, -75), (15, -75), (40, -50), (35, -15), (0, 25), (-50, 70), (0, 70), (60, 70)]


def capture(url: str, out: Path) -> None:
    driver = chrome(1400, 1180)
    try:
        driver.get(url)
        page_ready(driver)
        mapped = driver.find_element("id", "map")
        draw_stroke(driver, driver.find_element("id", "pad"), TWO)
        wait_for(driver, "window.explorer.state.drawn")
        for point in ((-170, 120), (160, -150)):  # interpolation ends: a click each
            draw_stroke(driver, mapped, [point])
        wait_for(driver, "document.querySelectorAll('.loading').length === 0")
        hover(driver, mapped, 60, -40)  # leaves the decoded point in the preview
        wait_for(driver, "!window.explorer.decoder.inFlight")
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main(argv: list[str]) -> int:
    reason = missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else OUT
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(ROOT / "artifacts", Path(tmp) / "server.log")
        try:
            capture(url + "/", out)
        finally:
            stop_server(proc)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
