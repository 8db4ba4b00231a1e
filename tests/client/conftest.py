"""One real `python -m service` process for the client's tests, started once per session: the tiny artifacts plus
a second version of vae, an API key, and a per-request limit of MAX_ITEMS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.client.common import API_KEY, MAX_ITEMS, Live
from tests.factories import write
from tests.helpers import start_server, stop_server


@pytest.fixture(scope="session")
def live(artifacts_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Live:
    root = tmp_path_factory.mktemp("client-server")
    artifacts = root / "artifacts"
    shutil.copytree(artifacts_template, artifacts)
    write(artifacts, "vae", "vae", seed=1)  # vae/2: the newest, what an unpinned call gets
    log = root / "server.log"
    proc, url = start_server(artifacts, log, api_key=API_KEY, max_items_per_request=MAX_ITEMS)
    yield Live(url, artifacts, log)
    stop_server(proc)
