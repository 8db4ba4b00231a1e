"""/docs and /redoc in headless Chromium against a real uvicorn process: the pages render the API's operations from
the service's own files, with no request to another host (issue 21: they were blank pages offline)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.browser import chrome, missing, requested_urls, severe_console_errors, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


@pytest.fixture(scope="module")
def browser():
    driver = chrome(network_log=True)
    yield driver
    driver.quit()


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).netloc for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")}


def test_docs_render_the_operations_from_the_service_alone(browser, live_server):
    _, url = live_server()
    requested_urls(browser)
    browser.get(url + "/docs")
    # Swagger UI draws one block per operation once it has the OpenAPI document.
    paths = wait_for(browser, "document.querySelectorAll('.opblock-summary-path').length > 10 && "
                              "Array.from(document.querySelectorAll('.opblock-summary-path'), e => e.textContent)")
    assert {"/encode", "/decode", "/reconstruct", "/sample", "/models"} <= {p.replace("\u200b", "") for p in paths}
    urls = requested_urls(browser)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls)
    assert _hosts(urls) == {urlsplit(url).netloc}, urls
    assert severe_console_errors(browser) == []


def test_redoc_renders_the_operations_from_the_service_alone(browser, live_server):
    _, url = live_server()
    requested_urls(browser)
    browser.get(url + "/redoc")
    text = wait_for(browser, "document.querySelector('.api-content') && document.body.innerText.includes('/encode') "
                             "&& document.body.innerText")
    assert "/sample" in text
    urls = requested_urls(browser)
    assert any(u.endswith("/redoc.standalone.js") for u in urls)
    assert _hosts(urls) == {urlsplit(url).netloc}, urls
