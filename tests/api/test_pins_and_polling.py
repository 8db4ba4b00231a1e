"""Pins and polling through the app: DEFAULT pins what unpinned requests get (via /admin/reload and the poller), a
pin that cannot be followed keeps the previous default and says why, and with LATENTSERVE_POLL_S the app applies new,
removed and pinned versions by itself while never loading or refusing a folder that is still being written."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import pytest

from tests import factories
from tests.serving import serve

pytestmark = pytest.mark.anyio
ONE = {"images": [[0.5] * 784]}


async def until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def served_version(client, query: str = "") -> int:
    r = await client.post(f"/encode{query}", json=ONE)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def vae_entry(listing: dict) -> dict:
    return next(m for m in listing["models"] if m["name"] == "vae")


async def test_a_pin_sets_the_default_and_removing_it_returns_to_the_highest(client, artifacts_dir):
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    (artifacts_dir / "vae" / "DEFAULT").write_text("1\n")
    report = (await client.post("/admin/reload", json={})).json()
    assert report["loaded"] == [{"name": "vae", "version": 2}] and report["serving"]["vae"] == 1
    entry = vae_entry((await client.get("/models")).json())
    assert (entry["default_version"], entry["default_reason"], entry["pin_error"]) == (1, "pinned", None)
    detail = (await client.get("/models/vae")).json()
    assert (detail["default_version"], detail["default_reason"], detail["pin"]) == (1, "pinned", 1)
    assert await served_version(client) == 1 and await served_version(client, "?version=2") == 2
    (artifacts_dir / "vae" / "DEFAULT").unlink()
    assert (await client.post("/admin/reload", json={})).json()["serving"]["vae"] == 2
    entry = vae_entry((await client.get("/models")).json())
    assert (entry["default_version"], entry["default_reason"]) == (2, "highest")
    assert await served_version(client) == 2


async def test_a_pin_to_a_missing_version_keeps_the_default_and_says_why(client, artifacts_dir, caplog):
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    (artifacts_dir / "vae" / "DEFAULT").write_text("1\n")
    await client.post("/admin/reload", json={})
    (artifacts_dir / "vae" / "DEFAULT").write_text("5\n")
    with caplog.at_level(logging.WARNING, "service.registry"):
        assert (await client.post("/admin/reload", json={})).json()["serving"]["vae"] == 1
    detail = (await client.get("/models/vae")).json()
    assert (detail["default_version"], detail["default_reason"], detail["pin"]) == (1, "previous", 5)
    assert detail["pin_error"] == "DEFAULT pins version 5, which is not loaded (loaded: [1, 2])"
    assert vae_entry((await client.get("/models")).json())["pin_error"] == detail["pin_error"]
    assert [r.getMessage() for r in caplog.records] == [
        "vae: DEFAULT pins version 5, which is not loaded (loaded: [1, 2]); the default stays vae/1"]
    assert await served_version(client) == 1


async def test_a_pin_to_a_refused_version_keeps_the_highest_and_gives_the_refusal(client, artifacts_dir):
    corrupt = factories.write(artifacts_dir, "vae", "vae", seed=3)
    (corrupt / "weights.safetensors").write_bytes(b"\0" * 64)
    (artifacts_dir / "vae" / "DEFAULT").write_text("2")
    report = (await client.post("/admin/reload", json={})).json()
    assert [(r["name"], r["version"]) for r in report["refused"]] == [("vae", 2)]
    detail = (await client.get("/models/vae")).json()
    assert (detail["default_version"], detail["default_reason"]) == (1, "previous")
    assert detail["pin_error"].startswith("DEFAULT pins version 2, which was refused: ")
    assert "SHA-256" in detail["pin_error"]
    assert await served_version(client) == 1


async def test_every_change_is_logged_once_with_model_version_and_reason(client, artifacts_dir, caplog):
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    corrupt = factories.write(artifacts_dir, "ae", "ae", seed=3)
    (corrupt / "weights.safetensors").write_bytes(b"\0" * 64)
    shutil.rmtree(artifacts_dir / "pca")
    with caplog.at_level(logging.INFO, "service.registry"):
        await client.post("/admin/reload", json={})
        await client.post("/admin/reload", json={})  # nothing changed: nothing logged
    changes = [(r.change, r.model, r.version) for r in caplog.records if hasattr(r, "change")]
    assert changes == [("loaded", "vae", 2), ("default", "vae", 2), ("refused", "ae", 2), ("dropped", "pca", 1)]
    refused = next(r for r in caplog.records if getattr(r, "change", None) == "refused")
    assert "SHA-256" in refused.reason and "SHA-256" in refused.getMessage()
    dropped = next(r for r in caplog.records if getattr(r, "change", None) == "dropped")
    assert dropped.getMessage() == "dropped pca/1: its folder is gone; its queued requests have finished"


@pytest.fixture
async def polled(artifacts_dir):
    async with serve(artifacts_dir, poll_s=0.02) as client:
        yield client


def poller_of(client):
    return client.app.state.service.poller


async def scans_later(client, n: int = 3) -> None:
    """Returns once the poller has scanned n more times (each scan also applied, when it had anything to apply)."""
    poller = poller_of(client)
    target = poller.scans + n
    await until(lambda: poller.scans >= target)


async def test_polling_applies_a_new_version_a_removal_and_a_pin(polled, artifacts_dir):
    registry = polled.app.state.service.registry
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    await until(lambda: 2 in registry.models["vae"])
    assert await served_version(polled) == 2
    (artifacts_dir / "vae" / "DEFAULT").write_text("1\n")
    await until(lambda: registry.defaults["vae"].reason == "pinned")
    assert await served_version(polled) == 1
    (artifacts_dir / "vae" / "DEFAULT").unlink()
    shutil.rmtree(artifacts_dir / "vae" / "2")
    await until(lambda: 2 not in registry.models["vae"])
    assert registry.defaults["vae"].reason == "highest" and await served_version(polled) == 1
    assert (await polled.post("/encode?version=2", json=ONE)).status_code == 404


async def test_polling_never_loads_nor_refuses_a_folder_being_written(artifacts_dir, tmp_path):
    # A period that is long beside this test's own latency: each chunk lands within the period after a scan, as a
    # copy that keeps writing does, so no two scans in a row see the same partial file.
    async with serve(artifacts_dir, poll_s=0.5) as client:
        registry = client.app.state.service.registry
        source = factories.copy_as_version(artifacts_dir / "vae" / "1", tmp_path / "vae-2", 2)
        target = artifacts_dir / "vae" / "2"
        target.mkdir()
        await scans_later(client, 3)
        assert 2 not in registry.models["vae"] and registry.refused == []  # no manifest, however long
        shutil.copy(source / "manifest.json", target)  # the manifest first, then the weights a chunk per scan
        weights = (source / "weights.safetensors").read_bytes()
        step = len(weights) // 4 + 1
        for end in range(step, len(weights) + step, step):
            await scans_later(client, 1)
            (target / "weights.safetensors").write_bytes(weights[:end])
            assert registry.refused == [] and 2 not in registry.models["vae"]
        shutil.copytree(source, target, dirs_exist_ok=True)  # the rest of the files (a report, an embedding)
        await until(lambda: 2 in registry.models["vae"])
        assert registry.refused == [] and await served_version(client) == 2


async def test_polling_waits_without_refusing_for_files_a_stalled_copy_still_lacks(polled, artifacts_dir, tmp_path,
                                                                                  caplog):
    # The manifest, then nothing for many scans (the next file downloading elsewhere), then the rest.
    registry = polled.app.state.service.registry
    source = factories.copy_as_version(artifacts_dir / "vae" / "1", tmp_path / "vae-2", 2)
    target = artifacts_dir / "vae" / "2"
    target.mkdir()
    with caplog.at_level(logging.INFO, "service.poll"):
        shutil.copy(source / "manifest.json", target)
        await scans_later(polled, 10)
        assert registry.refused == [] and 2 not in registry.models["vae"]
        shutil.copytree(source, target, dirs_exist_ok=True)
        await until(lambda: 2 in registry.models["vae"])
    assert registry.refused == [] and await served_version(polled) == 2
    waiting = [r for r in caplog.records if getattr(r, "change", None) == "waiting"]
    assert [(r.model, r.version) for r in waiting] == [("vae", 2)]
    assert "weights.safetensors" in waiting[0].reason and "weights.safetensors" in waiting[0].getMessage()


async def test_polling_refuses_a_settled_corrupt_version_and_the_rest_serve(polled, artifacts_dir):
    registry = polled.app.state.service.registry
    corrupt = factories.write(artifacts_dir, "vae", "vae", seed=3)
    (corrupt / "weights.safetensors").write_bytes(b"\0" * 64)
    await until(lambda: registry.refused != [])
    assert [(r.name, r.version) for r in registry.refused] == [("vae", 2)]
    listing = (await polled.get("/models")).json()
    assert [(r["name"], r["version"]) for r in listing["refused"]] == [("vae", 2)]
    assert await served_version(polled) == 1


async def test_a_quiet_folder_costs_scans_but_no_reload(polled):
    poller = poller_of(polled)
    await scans_later(polled, 2)  # past the one reload that follows the first scan
    reloads = poller.reloads
    await scans_later(polled, 5)
    assert poller.reloads == reloads


async def test_polling_is_off_by_default(client):
    assert client.app.state.service.poller is None and client.app.state.service.polling is None
