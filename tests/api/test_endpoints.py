"""Every endpoint, input format and reply type, against the same models run in-process."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from service.operations import OPERATIONS
from tests.helpers import IMAGES, IMAGES_U8, npy, png_b64, reference, run
from tests.serving import serve

pytestmark = pytest.mark.anyio
NPY = {"content-type": "application/x-npy"}

IMAGE_BODIES = {
    "784 list": lambda: {"json": {"images": IMAGES.tolist()}},
    "28x28 rows": lambda: {"json": {"images": IMAGES.reshape(3, 28, 28).tolist()}},
    "png gray": lambda: {"json": {"images": [png_b64(a) for a in IMAGES_U8]}},
    "png rgb": lambda: {"json": {"images": [png_b64(a, "RGB") for a in IMAGES_U8]}},
    "npy uint8 (N,28,28)": lambda: {"content": npy(IMAGES_U8), "headers": NPY},
    "npy float32 (N,784)": lambda: {"content": npy(IMAGES), "headers": NPY},
}


@pytest.mark.parametrize("fmt", IMAGE_BODIES)
async def test_encode_accepts_every_image_format(client, artifacts_dir, fmt):
    r = await client.post("/encode", **IMAGE_BODIES[fmt]())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("vae", 1)
    z_loc, z_scale = run(reference(artifacts_dir, "vae").encode, IMAGES)
    np.testing.assert_allclose(body["mean"], z_loc, atol=1e-5)
    np.testing.assert_allclose(body["scale"], z_scale, atol=1e-5)


async def test_encode_of_the_autoencoder_has_no_scale(client, artifacts_dir):
    r = await client.post("/encode?model=ae&version=1", json={"images": IMAGES.tolist()})
    assert r.status_code == 200 and r.json()["scale"] is None
    np.testing.assert_allclose(r.json()["mean"], run(reference(artifacts_dir, "ae").encode, IMAGES)[0], atol=1e-5)


async def test_encode_of_ppca_gives_one_posterior_scale_row_per_image(client, artifacts_dir):
    r = await client.post("/encode?model=pca", json={"images": IMAGES.tolist()})
    assert r.status_code == 200, r.text
    z_loc, z_scale = run(reference(artifacts_dir, "pca").encode, IMAGES)
    np.testing.assert_allclose(r.json()["mean"], z_loc, atol=1e-5)
    np.testing.assert_allclose(r.json()["scale"], z_scale, atol=1e-6)
    assert len(r.json()["scale"]) == len(IMAGES)


@pytest.mark.parametrize("model", ["pca", "ae", "vae"])
async def test_decode_matches_in_process_and_every_reply_type(client, artifacts_dir, model):
    z = np.array([[0.0, 0.0], [1.0, -2.0]], np.float32)
    expected = run(reference(artifacts_dir, model).decode, z).numpy()
    r = await client.post(f"/decode?model={model}", json={"latents": z.tolist()})
    assert r.status_code == 200 and r.json()["model"] == model
    np.testing.assert_allclose(r.json()["images"], expected, atol=1e-5)
    r = await client.post(f"/decode?model={model}", content=npy(z), headers={**NPY, "accept": "application/x-npy"})
    assert r.headers["content-type"] == "application/x-npy" and r.headers["x-model"] == model
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected, atol=1e-5)
    r = await client.post(f"/decode?model={model}", json={"latents": z.tolist()}, headers={"accept": "image/png"})
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (56, 28)


async def test_reconstruct_mean_and_seeded_posterior_sample(client, artifacts_dir):
    model = reference(artifacts_dir, "vae")
    r = await client.post("/reconstruct", json={"images": IMAGES.tolist()})
    x_loc, z_loc, z_scale = run(model.reconstruct, IMAGES, np.zeros((3, 2), np.float32))
    body = r.json()
    np.testing.assert_allclose(body["images"], x_loc, atol=1e-5)
    np.testing.assert_allclose(body["mean"], z_loc, atol=1e-5)
    np.testing.assert_allclose(body["scale"], z_scale, atol=1e-5)
    first = (await client.post("/reconstruct", json={"images": IMAGES.tolist(), "sample": True, "seed": 5})).json()
    again = (await client.post("/reconstruct", json={"images": IMAGES.tolist(), "sample": True, "seed": 5})).json()
    other = (await client.post("/reconstruct", json={"images": IMAGES.tolist(), "sample": True, "seed": 6})).json()
    assert first["images"] == again["images"] and first["images"] != other["images"]
    as_npy = await client.post("/reconstruct?sample=true&seed=5", content=npy(IMAGES_U8),
                               headers={**NPY, "accept": "application/x-npy"})
    np.testing.assert_allclose(np.load(io.BytesIO(as_npy.content)), first["images"], atol=1e-5)


async def test_sample_is_reproducible_and_prior_distributed(client, artifacts_dir):
    r = await client.post("/sample?model=pca", json={"n": 5, "seed": 3})
    body = r.json()
    assert r.status_code == 200 and np.shape(body["latents"]) == (5, 2) and np.shape(body["images"]) == (5, 784)
    assert (await client.post("/sample?model=pca", json={"n": 5, "seed": 3})).json() == body
    np.testing.assert_allclose(body["images"], run(reference(artifacts_dir, "pca").decode,
                                                   np.array(body["latents"], np.float32)), atol=1e-5)
    unseeded = [(await client.post("/sample", json={"n": 2})).json()["latents"] for _ in range(2)]
    assert unseeded[0] != unseeded[1]
    png = await client.post("/sample", json={"n": 16, "seed": 1}, headers={"accept": "image/png"})
    assert Image.open(io.BytesIO(png.content)).size == (112, 112)
    empty = await client.post("/sample")
    assert empty.status_code == 200 and len(empty.json()["images"]) == 16


async def test_results_do_not_depend_on_what_shared_the_batch(client):
    requests = [("/sample", {"n": 3, "seed": s}) for s in range(8)]
    requests += [("/reconstruct", {"images": IMAGES.tolist(), "sample": True, "seed": s}) for s in range(8)]
    requests += [("/encode", {"images": IMAGES[i: i + 1].tolist()}) for i in range(3)]
    alone = [(await client.post(path, json=body)).json() for path, body in requests]
    together = await asyncio.gather(*(client.post(path, json=body) for path, body in requests))
    for a, t in zip(alone, together):
        assert t.json().keys() == a.keys()
        for key in ("images", "mean", "scale", "latents"):
            if a.get(key) is not None:
                np.testing.assert_allclose(t.json()[key], a[key], atol=1e-5)


async def test_models_listing_and_manifests(client):
    listing = (await client.get("/models")).json()
    assert {m["name"]: (m["kind"], m["versions"], m["default_version"]) for m in listing["models"]} == {
        "pca": ("ppca", [1], 1), "ae": ("ae", [1], 1), "vae": ("vae", [1], 1), "cvae": ("cvae", [1], 1)}
    ops = dict.fromkeys(OPERATIONS, 64)  # max_batch_size, with no bound on passes
    assert all(m["batch_sizes"] == ops for m in listing["models"])
    # The test app's limit, and the default body bound: what a client needs to split its inputs before a 413.
    assert listing["limits"] == {"max_items_per_request": 64, "max_body_bytes": 16 * 1024 * 1024,
                                 "max_score_work": 102_400}
    detail = (await client.get("/models/vae")).json()
    assert detail["versions"][0]["kind"] == "vae" and "files" in detail["versions"][0]
    missing = await client.get("/models/nope")
    assert missing.status_code == 404 and missing.json()["type"] == "unknown_model"


async def test_probes_and_metrics(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await client.post("/encode", json={"images": IMAGES.tolist()})
    text = (await client.get("/metrics")).text
    for name in ("latentserve_requests_total", "latentserve_request_seconds_bucket", "latentserve_batch_size_bucket",
                 "latentserve_queue_wait_seconds", "latentserve_compute_seconds", "latentserve_queue_items",
                 "latentserve_model_loaded", "latentserve_ready 1.0"):
        assert name in text
    assert 'latentserve_requests_total{endpoint="/encode",status="200"} 1.0' in text


async def test_openapi_documents_bodies_replies_and_errors(client):
    doc = (await client.get("/openapi.json")).json()
    for path in ("/encode", "/decode", "/reconstruct", "/sample"):
        op = doc["paths"][path]["post"]
        assert "examples" in op["requestBody"]["content"]["application/json"]["schema"]
        assert {"401", "404", "413", "415", "422", "500", "503", "504"} <= set(op["responses"])
        assert {p["name"] for p in op["parameters"]} == {"model", "version"}
    assert "application/x-npy" in doc["paths"]["/encode"]["post"]["requestBody"]["content"]
    assert "image/png" in doc["paths"]["/decode"]["post"]["responses"]["200"]["content"]
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_label_requests_by_route_template(artifacts_dir):
    async with serve(artifacts_dir, api_key="k", max_body_bytes=40_000) as client:
        auth = {"authorization": "Bearer k"}
        await client.post("/v2/models/vae-encode/versions/1/infer", headers=auth,
                          json={"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784],
                                            "data": IMAGES[0].tolist()}]})
        await client.get("/models/vae", headers=auth)
        await client.get("/models/vae/versions/1/embedding", headers=auth)
        await client.post("/encode", json={"images": IMAGES[:1].tolist()})  # 401, before routing
        await client.post("/decode", headers=auth, content=b"x" * 50_000)  # 413, before routing
        for path in ("/nope", "/v2/nothing/at/all", "/encode/extra"):
            await client.get(path, headers=auth)
        text = (await client.get("/metrics", headers=auth)).text
    for endpoint, status in [("/v2/models/{model_name}/versions/{model_version}/infer", 200),
                             ("/models/{name}", 200), ("/models/{name}/versions/{version}/embedding", 404),
                             ("/encode", 401), ("/decode", 413), ("other", 404)]:
        assert f'latentserve_requests_total{{endpoint="{endpoint}",status="{status}"}}' in text, endpoint
    assert 'latentserve_requests_total{endpoint="other",status="404"} 3.0' in text  # three unknown paths, one series
    assert "/nope" not in text and "/v2/nothing" not in text
