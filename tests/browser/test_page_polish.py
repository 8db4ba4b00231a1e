"""The explorer page's small things in headless Chromium (issue 21): the interpolation strip says what to do, report
pictures enlarge, the key field shows its whole placeholder, nothing overflows at 420 px, and a reload's new version
appears without a refresh."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.browser.browser import chrome, missing, page_ready, wait_for
from tests.factories import write, write_defaults
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


@pytest.fixture
def committed_vae(live_server, tmp_path):
    """The committed vae/2 alone (its report PNGs and embedding), served: one model warms up faster than all."""
    shutil.copytree(ROOT / "artifacts" / "vae" / "2", tmp_path / "served" / "vae" / "2")
    return live_server(tmp_path / "served")[1]


@pytest.fixture(scope="module")
def narrow():
    driver = chrome(width=600, height=900)
    # Headless Chromium keeps windows at least 500 px wide: the viewport is narrowed by emulation instead.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def test_committed_page_at_420_px(narrow, committed_vae):
    url = committed_vae
    narrow.get(url + "/")
    page_ready(narrow)
    assert narrow.execute_script("return window.innerWidth") == 420
    # Nothing wider than the window: no sideways scrolling.
    assert narrow.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), \
        narrow.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    # The key field shows its whole placeholder.
    fits = narrow.execute_script("""
        const key = document.getElementById("key"), style = getComputedStyle(key);
        const ctx = document.createElement("canvas").getContext("2d");
        ctx.font = `${style.fontSize} ${style.fontFamily}`;
        const room = key.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return [ctx.measureText(key.placeholder).width, room];""")
    assert fits[0] <= fits[1], fits
    # The interpolation strip says what to do until two points are picked.
    assert narrow.execute_script("return document.getElementById('interp').dataset.hint").startswith("Click two")
    # A report picture enlarges to the panel's width on a click, and shrinks back on another.
    wait_for(narrow, "document.querySelectorAll('#report button img').length >= 3")
    before = narrow.execute_script("return document.querySelector('#report button').getBoundingClientRect().width")
    narrow.execute_script("document.querySelector('#report button').click()")
    after = narrow.execute_script("return document.querySelector('#report button').getBoundingClientRect().width")
    assert narrow.execute_script("return document.querySelector('#report button').getAttribute('aria-pressed')") \
        == "true"
    assert after >= before


def test_wide_report_pictures_enlarge(committed_vae):
    driver = chrome(width=1400, height=1600)
    try:
        url = committed_vae
        driver.get(url + "/")
        page_ready(driver)
        wait_for(driver, "document.querySelectorAll('#report button img').length >= 3")
        width = "document.querySelector('#report button').getBoundingClientRect().width"
        before = driver.execute_script(f"return {width}")
        driver.execute_script("document.querySelector('#report button').click()")
        assert driver.execute_script(f"return {width}") > 1.5 * before
        driver.execute_script("document.querySelector('#report button').click()")
        assert driver.execute_script(f"return {width}") == before
    finally:
        driver.quit()


def test_a_reload_shows_up_without_a_refresh(narrow, live_server, tmp_path):
    root = write_defaults(tmp_path / "artifacts")
    _, url = live_server(root)
    narrow.get(url + "/")
    page_ready(narrow)
    versions = "Array.from(document.getElementById('version').options, o => o.value)"
    assert narrow.execute_script(f"return {versions}") == ["1"]
    write(root, "vae", "vae", seed=5)
    reply = httpx.post(url + "/admin/reload", json={}, timeout=60)
    assert reply.status_code == 200, reply.text
    # The page polls /models every 5 s.
    assert wait_for(narrow, f"{versions}.includes('2') && {versions}", timeout_s=30) == ["1", "2"]
    assert narrow.execute_script("return document.getElementById('version').value") == "1"  # the choice stays
