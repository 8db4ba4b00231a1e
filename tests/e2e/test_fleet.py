"""A fleet of two: two real `python -m service` processes on one artifacts folder with LATENTSERVE_POLL_S, under light
load, converge by themselves on a new version, a pin and a removal, each within two poll periods (plus the load and
warm-up of a tiny model), with no 5xx and no request answered by a version it did not ask for."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import httpx
import pytest

from tests import factories

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
POLL_S = 0.5
# Two periods (seen, then seen unchanged), plus loading and warming a tiny model on a busy CI core.
CONVERGE_S = 2 * POLL_S + 4.0
ONE = {"images": [[0.5] * 784]}


async def load(client: httpx.AsyncClient, url: str, stop: asyncio.Event, answers: list) -> None:
    """Light load on one server: unpinned and pinned requests in turn, each answer kept as (asked, status, version)."""
    asks = [None, 1, 2]
    i = 0
    while not stop.is_set():
        asked = asks[i % len(asks)]
        query = "" if asked is None else f"?version={asked}"
        r = await client.post(f"{url}/encode{query}", json=ONE)
        answers.append((asked, r.status_code, r.json().get("version") if r.status_code == 200 else None))
        i += 1
        await asyncio.sleep(0.01)


async def converge(client: httpx.AsyncClient, urls: list[str], want) -> float:
    """Seconds until /models/vae on every server satisfies `want`; fails past CONVERGE_S."""
    start = time.monotonic()
    while True:
        details = [(await client.get(f"{url}/models/vae")).json() for url in urls]
        if all(want(d) for d in details):
            return time.monotonic() - start
        assert time.monotonic() - start < CONVERGE_S, details
        await asyncio.sleep(0.05)


async def test_two_replicas_converge_on_a_new_version_a_pin_and_a_removal(live_server, artifacts_dir, tmp_path):
    urls = [live_server(artifacts_dir, poll_s=POLL_S)[1] for _ in range(2)]
    vae = artifacts_dir / "vae"
    answers: dict[str, list] = {url: [] for url in urls}
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as client:
        loads = [asyncio.create_task(load(client, url, stop, answers[url])) for url in urls]
        staged = factories.copy_as_version(vae / "1", tmp_path / "staged", 2)
        os.rename(staged, vae / "2")  # a new version appears at once, as lvm.write_artifact's rename does
        new_s = await converge(client, urls, lambda d: d["default_version"] == 2 and d["default_reason"] == "highest")
        (vae / "DEFAULT").write_text("1\n")
        pin_s = await converge(client, urls, lambda d: d["default_version"] == 1 and d["default_reason"] == "pinned")
        (vae / "DEFAULT").unlink()
        shutil.rmtree(vae / "2")
        removal_s = await converge(client, urls, lambda d: [v["version"] for v in d["versions"]] == [1]
                                   and d["default_reason"] == "highest")
        stop.set()
        await asyncio.gather(*loads)
    print(f"converged: new version {new_s:.2f} s, pin {pin_s:.2f} s, removal {removal_s:.2f} s (poll {POLL_S} s)")
    for url, seen in answers.items():
        assert len(seen) > 20, f"{url} saw too little load"
        assert not [a for a in seen if a[1] >= 500], f"{url}: 5xx answers"
        assert all(version == asked for asked, status, version in seen if asked is not None and status == 200)
        assert all(status == 404 for asked, status, _ in seen if asked == 2 and status != 200)
        assert {status for asked, status, _ in seen if asked != 2} == {200}
        assert {version for asked, _, version in seen if asked is None} == {1, 2}  # both defaults were seen
    logs = [(tmp_path / f"server-{i}.log").read_text() for i in range(2)]
    for text in logs:
        for line in ("loaded vae/2", "default of vae is now vae/1 (pinned)", "dropped vae/2: its folder is gone"):
            assert line in text
        assert "refused" not in text and "Traceback" not in text
