"""`/score` through the ASGI transport: the reply per model, an image's estimate independent of its request and
batch, the bounds on samples and on a request's work, .npy bodies, and the protocol model giving the same answers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.helpers import IMAGES, IMAGES_U8, npy
from tests.serving import serve

pytestmark = pytest.mark.anyio
RNG = np.random.default_rng(11)
MORE = RNG.random((7, 784), dtype=np.float32)


async def _score(client, images, model="vae", **params):
    r = await client.post(f"/score?model={model}", json={"images": np.asarray(images).tolist(), **params})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model,terms", [("vae", True), ("ae", False), ("pca", False)])
async def test_the_reply_has_a_finite_score_per_image_and_the_vae_its_terms(client, model, terms):
    body = await _score(client, IMAGES, model, samples=16, seed=1)
    assert (body["model"], body["samples"]) == (model, 16)
    assert len(body["log_likelihood"]) == len(IMAGES) and np.isfinite(body["log_likelihood"]).all()
    for term in ("elbo", "reconstruction", "kl"):
        assert (body[term] is not None) == terms
    if terms:  # log p(x) >= ELBO = reconstruction - KL, up to the estimator's own noise
        np.testing.assert_allclose(body["elbo"], np.subtract(body["reconstruction"], body["kl"]), rtol=1e-4)
        assert (np.array(body["log_likelihood"]) >= np.array(body["elbo"]) - 1e-3).all()


async def test_an_images_estimate_depends_only_on_the_seed_and_the_image(client):
    alone = await _score(client, IMAGES[:1], samples=32, seed=5)
    # At another position of a larger request, and twice in it: the same number each time.
    mixed = await _score(client, np.concatenate([MORE[:3], IMAGES[:1], MORE[3:], IMAGES[:1]]), samples=32, seed=5)
    np.testing.assert_allclose(mixed["log_likelihood"][3], alone["log_likelihood"][0], rtol=1e-5)
    np.testing.assert_allclose(mixed["log_likelihood"][-1], alone["log_likelihood"][0], rtol=1e-5)
    # Batched with other clients' requests (all queued at once, so they share batches).
    together = await asyncio.gather(*[_score(client, np.concatenate([MORE[i:i + 2], IMAGES[:1]]), samples=32,
                                             seed=5) for i in range(4)])
    for body in together:
        np.testing.assert_allclose(body["log_likelihood"][2], alone["log_likelihood"][0], rtol=1e-5)
    other_seed = await _score(client, IMAGES[:1], samples=32, seed=6)
    assert other_seed["log_likelihood"][0] != alone["log_likelihood"][0]


async def test_different_images_get_independent_draws(client):
    """Two images that differ in one pixel by the smallest step still get different draws: their reconstruction
    terms (means over the draws) differ by more than that step could move them."""
    a = IMAGES[0].copy()
    b = a.copy()
    b[0] = np.nextafter(b[0], np.float32(1.0)) if b[0] < 1 else np.nextafter(b[0], np.float32(0.0))
    body = await _score(client, [a, b], samples=4, seed=3)
    assert body["reconstruction"][0] != pytest.approx(body["reconstruction"][1], rel=1e-4)


@pytest.mark.parametrize("samples", [0, -1, 5001, "10", True, 1.5])
async def test_a_bad_samples_is_a_422_naming_the_bound(client, samples):
    r = await client.post("/score", json={"images": IMAGES[:1].tolist(), "samples": samples})
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "invalid_input" and "5000" in r.json()["detail"]


@pytest.mark.parametrize("text", ["0", "5001", "١٠", "²", "x"])
async def test_a_bad_samples_in_the_query_is_a_422(client, text):
    r = await client.post(f"/score?samples={text}", content=npy(IMAGES_U8[:1]),
                          headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 422, r.text


async def test_npy_bodies_take_samples_and_seed_from_the_query(client):
    r = await client.post("/score?model=vae&samples=8&seed=2", content=npy(IMAGES_U8),
                          headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text
    body = r.json()
    as_json = await _score(client, IMAGES, samples=8, seed=2)
    assert body["samples"] == 8
    np.testing.assert_allclose(body["log_likelihood"], as_json["log_likelihood"], rtol=1e-5)


async def test_a_request_over_the_work_bound_is_a_413_naming_it(artifacts_dir):
    async with serve(artifacts_dir, max_score_work=100) as client:
        r = await client.post("/score", json={"images": IMAGES.tolist(), "samples": 50})
        assert r.status_code == 413, r.text
        assert "100" in r.json()["detail"] and "images x samples" in r.json()["detail"]
        ok = await client.post("/score", json={"images": IMAGES[:2].tolist(), "samples": 50})
        assert ok.status_code == 200, ok.text
        limits = (await client.get("/models")).json()["limits"]
        assert limits["max_score_work"] == 100


async def test_the_protocol_model_answers_like_the_route(client):
    native = await _score(client, IMAGES, samples=8, seed=4)
    r = await client.post("/v2/models/vae-score/infer", json={
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [3, 28, 28],
                    "data": IMAGES_U8.reshape(-1).tolist()}],
        "parameters": {"samples": 8, "seed": 4}})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    np.testing.assert_allclose(outputs["log_likelihood"]["data"], native["log_likelihood"], rtol=1e-5)
    assert outputs["log_likelihood"]["shape"] == [3]
    bad = await client.post("/v2/models/vae-score/infer", json={
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784], "data": IMAGES[0].tolist()}],
        "parameters": {"samples": 0}})
    assert bad.status_code == 422 and "5000" in bad.json()["error"]
