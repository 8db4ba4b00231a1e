"""The explorer's routes through the ASGI transport: the page and its static files, a version's embedding (JSON and
.npy) and its report PNGs, the 404s when an artifact has neither, and which of them need the API key."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from lvm.artifact import sha256_file
from lvm.embedding import EMBEDDING_FILE, compute_embedding
from tests.factories import embedding_images, write
from tests.helpers import IMAGES_U8, png_bytes, reference
from tests.serving import serve

pytestmark = pytest.mark.anyio
N = 50
KEY = "page-key"
LATENT_PNG = png_bytes(IMAGES_U8[0])


@pytest.fixture
def anyio_backend():
    return "asyncio"  # the service's lifespan needs asyncio


@pytest.fixture
def explored(artifacts_dir):
    """The tiny defaults (no embedding, no report) plus vae/2 and ae/2 with an embedding, and vae/2 a latent.png."""
    vae = write(artifacts_dir, "vae", "vae", embedding=N)
    write(artifacts_dir, "ae", "ae", embedding=N)
    manifest = vae / "manifest.json"
    (vae / "report").mkdir()
    (vae / "report" / "latent.png").write_bytes(LATENT_PNG)
    # Listed as training would list it: the manifest names the file with its SHA-256.
    data = json.loads(manifest.read_text())
    data["files"]["report/latent.png"] = sha256_file(vae / "report" / "latent.png")
    manifest.write_text(json.dumps(data))
    return artifacts_dir


@pytest.fixture
async def client(explored):
    async with serve(explored) as c:
        yield c


async def test_embedding_json_is_the_test_codes_of_the_version(client, explored):
    r = await client.get("/models/vae/versions/2/embedding")
    assert r.status_code == 200, r.text
    body = r.json()
    expected = compute_embedding(reference(explored, "vae", 2), *embedding_images(N))
    assert (body["model"], body["version"], body["count"], body["latent_dim"]) == ("vae", 2, N, 2)
    np.testing.assert_allclose(body["mean"], expected.mean, rtol=1e-6)
    np.testing.assert_allclose(body["scale"], expected.scale, rtol=1e-6)
    assert body["label"] == [i % 10 for i in range(N)]


async def test_embedding_npy_has_mean_scale_label_columns(client, explored):
    r = await client.get("/models/vae/versions/2/embedding", headers={"accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    assert r.headers["x-embedding-columns"] == "mean:2,scale:2,label:1"
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert array.shape == (N, 5) and array.dtype == np.float32
    assert array[:, 4].tolist() == [float(i % 10) for i in range(N)]


async def test_embedding_of_a_model_without_scale_has_none(client):
    r = await client.get("/models/ae/versions/2/embedding")
    assert r.json()["scale"] is None
    r = await client.get("/models/ae/versions/2/embedding", headers={"accept": "application/x-npy"})
    assert r.headers["x-embedding-columns"] == "mean:2,label:1"
    assert np.load(io.BytesIO(r.content)).shape == (N, 3)


@pytest.mark.parametrize("path, status, type_, words", [
    ("/models/vae/versions/1/embedding", 404, "not_found", "has no embedding"),
    ("/models/pca/versions/1/embedding", 404, "not_found", EMBEDDING_FILE),
    ("/models/nope/versions/1/embedding", 404, "unknown_model", "not loaded"),
    ("/models/vae/versions/9/embedding", 404, "unknown_model", "no loaded version 9"),
    ("/models/vae/versions/x/embedding", 422, "invalid_input", "positive integer"),
    ("/models/vae/versions/2/report/samples.png", 404, "not_found", "it has: latent.png"),
    ("/models/vae/versions/2/report/manifest.json", 404, "not_found", "no report file"),
    ("/models/vae/versions/2/report/..%2Fweights.safetensors", 404, "not_found", ""),
    ("/models/vae/versions/1/report/latent.png", 404, "not_found", "it has: none"),
])
async def test_missing_embedding_or_report_is_a_clear_error(client, path, status, type_, words):
    r = await client.get(path)
    assert r.status_code == status, r.text
    assert r.json()["type"] == type_ and words in r.json()["detail"]


async def test_model_detail_lists_the_reports_the_route_serves_not_the_manifests_files(explored):
    # The page listed the manifest's report/ entries: one the route does not serve broke the whole report panel.
    manifest = explored / "vae" / "2" / "manifest.json"
    data = json.loads(manifest.read_text())
    (explored / "vae" / "2" / "report" / "extra.png").write_bytes(LATENT_PNG)
    data["files"]["report/extra.png"] = sha256_file(explored / "vae" / "2" / "report" / "extra.png")
    manifest.write_text(json.dumps(data))
    async with serve(explored) as c:
        detail = (await c.get("/models/vae")).json()
        assert detail["reports"] == {"1": [], "2": ["latent.png"]}
        for v, files in detail["reports"].items():
            for f in files:
                assert (await c.get(f"/models/vae/versions/{v}/report/{f}")).status_code == 200


async def test_report_png_is_served_from_the_allow_list(client):
    r = await client.get("/models/vae/versions/2/report/latent.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == LATENT_PNG


@pytest.mark.parametrize("change", ["tampered", "removed"])
async def test_a_file_changed_after_loading_is_a_404_logged_once(client, explored, caplog, change):
    # It was a 500 with an ERROR and a traceback per request (112 in 1.5 s from a looping page).
    for path in (explored / "vae" / "2" / EMBEDDING_FILE, explored / "vae" / "2" / "report" / "latent.png"):
        path.write_bytes(b"tampered") if change == "tampered" else path.unlink()
    for _ in range(3):
        for path in ("/models/vae/versions/2/embedding", "/models/vae/versions/2/report/latent.png"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["type"] == "not_found", r.text
            assert "no longer on disk as it was loaded" in r.json()["detail"]
    warnings = [rec for rec in caplog.records if rec.name == "service.pages"]
    assert len(warnings) == 2 and all(rec.levelname == "WARNING" for rec in warnings)


@pytest.mark.parametrize("accept", ["application/json", "application/x-npy"])
async def test_the_embedding_is_read_once_per_version_and_revalidated_by_etag(client, explored, accept):
    # Each GET re-read, re-hashed and re-rendered the file (1.1 MB of JSON): looping page clients slowed /encode.
    path = "/models/vae/versions/2/embedding"
    first = await client.get(path, headers={"accept": accept})
    assert first.status_code == 200 and first.headers["etag"]
    (explored / "vae" / "2" / EMBEDDING_FILE).unlink()  # read once: the loaded version's reply no longer needs it
    again = await client.get(path, headers={"accept": accept})
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"] and again.headers["vary"] == "Accept"
    r = await client.get(path, headers={"accept": accept, "if-none-match": first.headers["etag"]})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == first.headers["etag"]
    other = "application/json" if accept != "application/json" else "application/x-npy"
    r = await client.get(path, headers={"accept": other, "if-none-match": first.headers["etag"]})
    assert r.status_code != 304  # another format, another tag (a 404 here: its reply was never built)


async def test_a_report_png_is_revalidated_by_etag(client):
    first = await client.get("/models/vae/versions/2/report/latent.png")
    r = await client.get("/models/vae/versions/2/report/latent.png", headers={"if-none-match": first.headers["etag"]})
    assert r.status_code == 304 and r.content == b""


async def test_page_and_static_files_are_served(client):
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for src in ("/static/explorer.css", "/static/js/main.js", "/static/favicon.svg"):
        assert src in r.text or src == "/static/favicon.svg"
        assert (await client.get(src)).status_code == 200, src
    assert (await client.get("/static/nope.js")).status_code == 404
    assert (await client.get("/static/../app.py")).status_code == 404


async def test_with_a_key_the_page_is_open_and_the_data_is_not(explored):
    async with serve(explored, api_key=KEY) as c:
        for path in ("/", "/static/js/main.js", "/favicon.ico"):
            assert (await c.get(path)).status_code == 200, path
        for path in ("/models/vae/versions/2/embedding", "/models/vae/versions/2/report/latent.png",
                     "/staticx", "/static"):
            r = await c.get(path)
            assert r.status_code == 401 and r.json()["type"] == "unauthorized", path
        r = await c.get("/models/vae/versions/2/embedding", headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
