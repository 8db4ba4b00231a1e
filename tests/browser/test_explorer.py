"""The explorer page in headless Chromium against real uvicorn processes: it loads cleanly, draws the map in its ten
colours, decodes under the pointer (and fast enough while dragging), places a drawn 1 among the 1s (on the committed
VAE), repeats a seeded sample grid, asks for the API key, and shows the API's errors."""

from __future__ import annotations

import hashlib

import shutil
from collections import Counter

import numpy as np
import pytest

from lvm.artifact import read_manifest
from lvm.embedding import read_embedding
from tests.browser.browser import chrome, draw_stroke, hover, missing, page_ready, severe_console_errors, wait_for
from tests.factories import write
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]
DRAG_MS = 3000
# Presses on the map, moves the pointer along a circle every 10 ms, releases, and reports what the decoder did.
DRAG_SCRIPT = """
const [durationMs, done] = arguments, map = document.getElementById("map"), r = map.getBoundingClientRect();
const decoder = window.explorer.decoder, completed0 = decoder.completed, sent0 = decoder.sent;
const at = (t) => ({clientX: r.left + r.width * (0.5 + 0.3 * Math.cos(t)), clientY: r.top + r.height * (0.5 +
                   0.3 * Math.sin(t)), pointerId: 1, bubbles: true, isPrimary: true, pointerType: "mouse"});
const start = performance.now();
map.dispatchEvent(new PointerEvent("pointerdown", {...at(0), buttons: 1}));
let moves = 0;
const timer = setInterval(() => {
  const elapsed = performance.now() - start;
  if (elapsed < durationMs) {
    map.dispatchEvent(new PointerEvent("pointermove", {...at(elapsed / 300), buttons: 1}));
    moves += 1;
    return;
  }
  clearInterval(timer);
  map.dispatchEvent(new PointerEvent("pointerup", at(elapsed / 300)));
  const trips = decoder.roundTripsMs.slice(-(decoder.completed - completed0)).sort((a, b) => a - b);
  done([moves, decoder.completed - completed0, elapsed, decoder.sent - sent0, trips[Math.floor(trips.length / 2)]]);
}, 10);
"""
MIN_DECODES_PER_S = 30
COMMITTED_VAE = ROOT / "artifacts" / "vae" / "2"
# The map's palette as RGB, in the page's own order (service/static/js/map.js).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999",
           "#882255"]


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The tiny defaults plus vae/2 with an embedding of 200 images (the page's default: vae, highest version)."""
    root = tmp_path_factory.mktemp("explorer")
    for name, kind in (("pca", "ppca"), ("ae", "ae"), ("vae", "vae")):
        write(root, name, kind)
    write(root, "vae", "vae", embedding=200)
    return root


@pytest.fixture
def page(browser, live_server, embedded):
    _, url = live_server(embedded)
    browser.get(url + "/")
    page_ready(browser)
    return browser


def _canvas_pixels(driver, element_id: str) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", element_id)
    return np.asarray(data, np.uint8).reshape(-1, 4)[:, :3]


def test_page_loads_without_console_errors_and_draws_ten_colours(page):
    assert severe_console_errors(page) == []  # under the page's Content-Security-Policy (service/browser.py)
    assert page.find_element("id", "messages").text == ""
    # No key configured and the browser on this host: admin is allowed, so the action shows.
    assert wait_for(page, "document.getElementById('key-scopes').textContent") == "no key needed: infer, admin"
    assert page.find_element("id", "admin-reload").is_displayed()
    pixels = _canvas_pixels(page, "map")
    for digit, colour in enumerate(PALETTE):
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert (pixels == rgb).all(axis=1).sum() >= 9, f"digit {digit} ({colour}) is not on the map"


def _model_details(driver) -> int:
    """How many GET /models/{name} the page has sent since it opened."""
    return driver.execute_script("return performance.getEntriesByType('resource').filter("
                                 "e => /^\\/models\\/[^/]+$/.test(new URL(e.name).pathname)).length")


def test_a_chosen_version_asks_for_its_model_once(page):
    from selenium.webdriver.support.ui import Select

    assert _model_details(page) == 1  # the version the page opened on: its digits' distributions and report share it
    Select(page.find_element("id", "version")).select_by_value("1")
    page_ready(page)
    assert _model_details(page) == 2
    assert "Trained" in page.find_element("id", "metrics").text


def _decode_requests(driver) -> int:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/decode')).length")


def test_hovering_decodes_into_the_preview(page):
    mapped = page.find_element("id", "map")
    hover(page, mapped, -200, -150)
    wait_for(page, "!window.explorer.decoder.inFlight && !window.explorer.decoder.next")
    before, requests = _canvas_pixels(page, "preview"), _decode_requests(page)
    completed = page.execute_script("return window.explorer.decoder.completed")
    hover(page, mapped, 200, 150)
    wait_for(page, f"window.explorer.decoder.completed > {completed} && !window.explorer.decoder.inFlight")
    assert _decode_requests(page) > requests
    assert not np.array_equal(_canvas_pixels(page, "preview"), before)
    assert page.find_element("id", "preview-z").text.startswith("z = [")


def test_dragging_decodes_at_least_30_per_second(page):
    """Pointer events are dispatched in the page every 10 ms for 3 s (WebDriver's own actions arrive too slowly on a
    busy machine to measure the page); the decodes are real requests to the server, at most one in flight."""
    # The best of up to three drags: the rate is the server's round trip, and a CI machine has moments of contention.
    rates = []
    for _ in range(3):
        moves, completed, elapsed_ms, sent, median_ms = page.execute_async_script(DRAG_SCRIPT, DRAG_MS)
        rates.append(completed / (elapsed_ms / 1000))
        print(f"\ndrag of {elapsed_ms:.0f} ms: {moves} pointer moves, {sent} decodes sent, {completed} completed: "
              f"{rates[-1]:.1f} decodes per s (median round trip {median_ms:.1f} ms)")
        assert sent - completed <= 1  # never more than one decode in flight: stale points are dropped
        if rates[-1] >= MIN_DECODES_PER_S:
            break
    assert max(rates) >= MIN_DECODES_PER_S, rates
    assert severe_console_errors(page) == []


def test_a_seeded_sample_grid_is_the_same_twice(page):
    grids = []
    for seed in ("7", "8", "7"):
        box = page.find_element("id", "seed")
        box.clear()
        box.send_keys(seed)
        box.submit()
        wait_for(page, f"document.getElementById('samples').getAttribute('aria-label').endsWith('seed {seed}')")
        wait_for(page, "document.querySelectorAll('.loading').length === 0")
        grids.append(_canvas_pixels(page, "samples"))
    assert np.array_equal(grids[0], grids[2])
    assert not np.array_equal(grids[0], grids[1])


def test_an_api_error_is_shown(page):
    box = page.find_element("id", "seed")
    box.clear()
    box.send_keys("-1")
    box.submit()
    message = wait_for(page, "document.getElementById('messages').textContent")
    assert "Sampling" in message and "seed must be an integer" in message and "422" in message


def test_without_an_embedding_the_map_says_why(browser, live_server, artifacts_template):
    _, url = live_server(artifacts_template)
    browser.get(url + "/")
    page_ready(browser)
    note = browser.find_element("id", "map-empty").text
    assert "has no embedding" in note and "everything else works" in note
    wait_for(browser, "window.explorer.decoder.completed > 0")  # the preview still decodes


def test_with_an_api_key_the_page_asks_for_it_then_works(browser, live_server, embedded):
    _, url = live_server(embedded, api_key="k3y")
    browser.get(url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    message = wait_for(browser, "document.getElementById('messages').textContent")
    assert "needs an API key" in message
    key = browser.find_element("id", "key")
    key.send_keys("k3y")
    key.submit()
    page_ready(browser)
    assert browser.execute_script("return window.explorer.map.labels.length") == 200
    assert browser.find_element("id", "messages").text == ""
    assert browser.execute_script("return sessionStorage.getItem('latentserve.apiKey')") == "k3y"
    assert wait_for(browser, "document.getElementById('key-scopes').textContent") == "key default: infer, admin"
    assert browser.find_element("id", "admin-reload").is_displayed()


def test_a_key_without_admin_sees_its_scopes_and_no_admin_action(browser, live_server, embedded, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"viewer infer sha256:{hashlib.sha256(b'v1ew').hexdigest()}\n")
    _, url = live_server(embedded, api_keys_file=keys)
    browser.get(url + "/")
    browser.execute_script("sessionStorage.setItem('latentserve.apiKey', 'v1ew')")
    severe_console_errors(browser)  # drains the log: the keyless first visit got its 401s
    browser.get(url + "/")
    page_ready(browser)
    assert wait_for(browser, "document.getElementById('key-scopes').textContent") == "key viewer: infer"
    assert not browser.find_element("id", "admin-reload").is_displayed()
    refused = [e for e in severe_console_errors(browser) if "Content Security Policy" in e["message"]]
    assert refused == []  # the page's CSP refused nothing it needs


def test_a_drawn_vertical_stroke_lands_among_the_ones(browser, live_server, tmp_path):
    """On the committed VAE: the drawn digit's posterior mean has mostly 1s among its 50 nearest test codes."""
    shutil.copytree(COMMITTED_VAE, tmp_path / "real" / "vae" / "2")
    _, url = live_server(tmp_path / "real")
    browser.get(url + "/")
    page_ready(browser)
    draw_stroke(browser, browser.find_element("id", "pad"), [(0, -80), (0, -40), (0, 0), (0, 40), (0, 80)])
    mean = np.asarray(wait_for(browser, "window.explorer.state.drawn && window.explorer.state.drawn.mean"))
    embedding = read_embedding(COMMITTED_VAE, read_manifest(COMMITTED_VAE))
    nearest = np.argsort(((embedding.mean - mean) ** 2).sum(axis=1))[:50]
    votes = Counter(embedding.label[nearest].tolist())
    print(f"\nvertical stroke: z = {mean.round(3).tolist()}, labels of the 50 nearest test codes: {dict(votes)}")
    assert votes.most_common(1)[0][0] == 1 and votes[1] >= 30


def test_a_drawn_digit_gets_its_score_verdict_and_the_reference_histogram(browser, live_server, tmp_path):
    """On the committed VAE with its reference set: a drawn stroke is scored as you draw, the verdict and the
    percentile shown, the histogram drawn with the drawing marked."""
    committed = ROOT / "artifacts" / "vae"
    version = max(int(p.name) for p in committed.iterdir() if p.name.isdigit())
    shutil.copytree(committed / str(version), tmp_path / "real" / "vae" / str(version))
    _, url = live_server(tmp_path / "real")
    browser.get(url + "/")
    page_ready(browser)
    draw_stroke(browser, browser.find_element("id", "pad"), [(0, -80), (0, -40), (0, 0), (0, 40), (0, 80)])
    text = wait_for(browser, "document.getElementById('score').textContent")
    assert "log-likelihood" in text and "percentile" in text
    verdict = browser.find_element("css selector", "#score strong").get_attribute("class")
    assert verdict in ("typical", "outlier")
    assert browser.find_element("id", "score-hist").is_displayed()
    marked = _canvas_pixels(browser, "score-hist")
    assert ((marked[:, 0] > 180) & (marked[:, 1] < 80)).any()  # the red line of the drawing
    assert severe_console_errors(browser) == []
