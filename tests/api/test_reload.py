"""Hot reload: a new version is warmed and becomes the default, a corrupt one is refused and reported, a removed
one is dropped, and requests in flight are not disturbed."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests import factories
from tests.serving import block

pytestmark = pytest.mark.anyio
ONE = {"images": [[0.5] * 784]}


async def test_new_version_becomes_the_default_and_old_ones_keep_serving(client, artifacts_dir):
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    report = (await client.post("/admin/reload", json={})).json()
    assert report["loaded"] == [{"name": "vae", "version": 2}] and report["serving"]["vae"] == 2
    assert (await client.post("/encode", json=ONE)).json()["version"] == 2
    old = await client.post("/encode?version=1", json=ONE)
    assert old.status_code == 200 and old.json()["version"] == 1


async def test_corrupt_version_is_refused_reported_and_the_rest_serve(client, artifacts_dir):
    corrupt = factories.write(artifacts_dir, "vae", "vae", seed=3)
    (corrupt / "weights.safetensors").write_bytes(b"\0" * 64)
    report = (await client.post("/admin/reload", json={})).json()
    assert [(r["name"], r["version"]) for r in report["refused"]] == [("vae", 2)]
    assert "SHA-256" in report["refused"][0]["reason"]
    listing = (await client.get("/models")).json()
    assert listing["refused"][0]["version"] == 2
    assert (await client.get("/models/vae")).json()["refused"][0]["version"] == 2
    r = await client.post("/encode", json=ONE)
    assert r.status_code == 200 and r.json()["version"] == 1
    assert (await client.post("/encode?version=2", json=ONE)).status_code == 404


async def test_removed_version_is_dropped_after_its_queued_work(client, artifacts_dir):
    gate = block(client, "pca", 1, "decode")
    in_flight = asyncio.create_task(client.post("/decode?model=pca", json={"latents": [[0.0, 0.0]]}))
    while client.app.state.service.activity.computing == 0:
        await asyncio.sleep(0.01)
    shutil.rmtree(artifacts_dir / "pca")
    reload = asyncio.create_task(client.post("/admin/reload", json={}))
    await asyncio.sleep(0.05)
    gate.set()
    assert (await in_flight).status_code == 200
    assert (await reload).json()["dropped"] == [{"name": "pca", "version": 1}]
    assert (await client.post("/decode?model=pca", json={"latents": [[0.0, 0.0]]})).status_code == 404
    assert 'model="pca"' not in (await client.get("/metrics")).text


async def test_version_removed_while_a_body_arrives_hands_the_request_to_the_new_default(client, artifacts_dir):
    factories.write(artifacts_dir, "vae", "vae", seed=9)
    assert (await client.post("/admin/reload", json={})).json()["serving"]["vae"] == 2
    body = b'{"images": [' + b",".join([b"0.5"] * 784).join([b"[", b"]"]) + b"]}"
    arrived, sent = asyncio.Event(), []

    async def receive():
        await arrived.wait()  # the body is still on its way while vae/2 is removed
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/encode", "raw_path": b"/encode", "query_string": b"", "root_path": "", "server": ("t", 80),
             "client": ("c", 1), "headers": [(b"content-type", b"application/json")]}
    request = asyncio.create_task(client.app(scope, receive, send))
    await asyncio.sleep(0.05)
    shutil.rmtree(artifacts_dir / "vae" / "2")
    assert (await client.post("/admin/reload", json={})).json()["dropped"] == [{"name": "vae", "version": 2}]
    arrived.set()
    await asyncio.wait_for(request, 10)
    assert sent[0]["status"] == 200, sent
    assert b'"version":1' in sent[1]["body"]


async def test_hostile_manifest_and_odd_folders_are_refused_or_skipped_and_the_rest_serve(client, artifacts_dir):
    hostile = factories.write(artifacts_dir, "vae", "vae", seed=4)
    manifest = json.loads((hostile / "manifest.json").read_text())
    manifest["latent_dim"] = manifest["architecture"]["latent_dim"] = 30000
    (hostile / "manifest.json").write_text(json.dumps(manifest))
    for odd in ("²", "١", "01"):
        shutil.copytree(artifacts_dir / "vae" / "1", artifacts_dir / "vae" / odd)
    r = await client.post("/admin/reload", json={})
    assert r.status_code == 200
    report = r.json()
    assert [(x["name"], x["version"]) for x in report["refused"]] == [("vae", 2)]
    assert "latent_dim must be an integer in [1, 512], got 30000" in report["refused"][0]["reason"]
    assert report["loaded"] == [] and report["serving"]["vae"] == 1
    assert (await client.post("/encode", json=ONE)).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("headers, content, status", [
    ({"content-type": "application/x-www-form-urlencoded"}, b"a=1", 415),  # what a cross-site form sends
    ({"content-type": "text/plain"}, b"x", 415),
    ({"content-type": "multipart/form-data; boundary=x"}, b"--x--", 415),
    ({}, None, 415),  # a no-cors fetch without a body: still a simple request
    ({"content-type": "application/json"}, None, 200),
    ({"x-requested-with": "curl"}, None, 200),
])
async def test_an_admin_post_needs_a_json_content_type_or_a_custom_header(client, headers, content, status):
    r = await client.post("/admin/reload", content=content, headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json()["type"] == "unsupported_media_type" and "X-Requested-With" in r.json()["detail"]
