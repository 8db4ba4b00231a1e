"""`digit` through the service's own routes and the protocol's: draws of a given digit equal the in-process model's
(class density for the AE/VAE, native for the cvae), seeded and independent of batching; the cvae's encode, decode
and reconstruct with and without a label; a digit with no model named goes to the cvae; bad digits are 422s."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from tests.helpers import IMAGES, reference

pytestmark = pytest.mark.anyio


def _expected_draws(model, n: int, seed: int, digit: int) -> tuple[np.ndarray, np.ndarray]:
    """What a seeded request must give: eps = randn((n, K)) then u = rand((n, 1)) from one generator."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, model.latent_dim), generator=g)
    u = torch.rand((n, 1), generator=g)[:, 0]
    with torch.no_grad():
        z, x = model.sample_digits(torch.full((n,), digit), eps, u)
    return z.numpy(), x.numpy()


@pytest.mark.parametrize("model", ["ae", "vae", "cvae"])
async def test_sample_of_a_digit_is_the_in_process_draw(client, artifacts_dir, model):
    r = await client.post(f"/sample?model={model}", json={"n": 5, "seed": 11, "digit": 7})
    assert r.status_code == 200, r.text
    z, x = _expected_draws(reference(artifacts_dir, model), 5, 11, 7)
    np.testing.assert_allclose(r.json()["latents"], z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.json()["images"], x, rtol=1e-5, atol=1e-5)


async def test_the_vae_draws_a_digit_around_its_class_mean(client, artifacts_dir):
    # tests.factories gives each digit one Gaussian of sd 0.3 near 2 (cos 36°d, sin 36°d); 64 draws: the mean's sd
    # is 0.0375 per axis.
    z = np.array((await client.post("/sample?model=vae", json={"n": 64, "seed": 1, "digit": 3})).json()["latents"])
    centre = reference(artifacts_dir, "vae").class_density.loc[3, 0].numpy()
    assert np.linalg.norm(centre - 2 * np.array([np.cos(0.6 * np.pi), np.sin(0.6 * np.pi)])) < 1.0
    assert np.linalg.norm(z.mean(0) - centre) < 0.15 and 0.2 < z.std(0).mean() < 0.4


async def test_a_draw_without_a_digit_keeps_the_images_a_seed_always_gave(client, artifacts_dir):
    body = (await client.post("/sample?model=vae", json={"n": 4, "seed": 5})).json()
    model = reference(artifacts_dir, "vae")
    eps = torch.randn((4, 2), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        np.testing.assert_allclose(body["images"], model.sample(eps)[1].numpy(), rtol=1e-5, atol=1e-5)


async def test_digit_draws_do_not_depend_on_batching(client):
    requests = [("/sample?model=cvae", {"n": 3, "seed": s, "digit": s % 10}) for s in range(6)]
    requests += [("/sample?model=vae", {"n": 2, "seed": s, **({"digit": s} if s % 2 else {})}) for s in range(6)]
    alone = [(await client.post(path, json=body)).json() for path, body in requests]
    together = await asyncio.gather(*(client.post(path, json=body) for path, body in requests))
    for a, t in zip(alone, together, strict=True):  # the same draws; a batched matmul may move the last bit
        np.testing.assert_allclose(np.array(t.json()["latents"]), np.array(a["latents"]), rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.array(t.json()["images"]), np.array(a["images"]), rtol=0, atol=1e-6)


async def test_a_digit_without_a_model_goes_to_the_cvae(client):
    with_digit = (await client.post("/sample", json={"n": 2, "seed": 0, "digit": 4})).json()
    without = (await client.post("/sample", json={"n": 2, "seed": 0})).json()
    assert with_digit["model"] == "cvae" and without["model"] == "vae"


async def test_the_protocol_draws_the_same_digits(client):
    native = (await client.post("/sample?model=cvae", json={"n": 3, "seed": 9, "digit": 2})).json()
    v2 = await client.post("/v2/models/cvae-sample/infer",
                           json={"inputs": [], "parameters": {"count": 3, "seed": 9, "digit": 2}})
    assert v2.status_code == 200, v2.text
    images = next(o for o in v2.json()["outputs"] if o["name"] == "images")
    np.testing.assert_allclose(np.array(images["data"]).reshape(3, 784), native["images"], atol=1e-6)


async def test_cvae_encode_decode_reconstruct_take_the_label(client, artifacts_dir):
    model = reference(artifacts_dir, "cvae")
    x = torch.as_tensor(IMAGES[:2])
    labels = torch.tensor([3, 3])
    with torch.no_grad():
        given, marginal = model.encode(x, labels), model.encode(x)
        blend = model.decode(torch.zeros(1, 2))
    encoded = (await client.post("/encode?model=cvae", json={"images": IMAGES[:2].tolist(), "digit": 3})).json()
    np.testing.assert_allclose(encoded["mean"], given[0].numpy(), rtol=1e-4, atol=1e-5)
    plain = (await client.post("/encode?model=cvae", json={"images": IMAGES[:2].tolist()})).json()
    np.testing.assert_allclose(plain["mean"], marginal[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plain["scale"], marginal[1].numpy(), rtol=1e-4, atol=1e-5)
    decoded = (await client.post("/decode?model=cvae", json={"latents": [[0.0, 0.0]]})).json()
    np.testing.assert_allclose(decoded["images"], blend.numpy(), atol=1e-5)
    rebuilt = await client.post("/reconstruct?model=cvae&digit=3", content=_npy(IMAGES[:2]),
                                headers={"content-type": "application/x-npy"})
    with torch.no_grad():
        expected = model.reconstruct(x, torch.zeros(2, 2), labels)[0].numpy()
    np.testing.assert_allclose(rebuilt.json()["images"], expected, atol=1e-5)


def _npy(array: np.ndarray) -> bytes:
    from tests.helpers import npy

    return npy(array)


@pytest.mark.parametrize("digit", [10, -1, "seven", "٣", "7", True, 7.0, [7]])
async def test_a_bad_digit_is_a_422_on_every_face(client, digit):
    native = await client.post("/sample?model=cvae", json={"n": 1, "digit": digit})
    assert native.status_code == 422 and native.json()["type"] == "invalid_input", native.text
    assert "digit" in native.json()["detail"]
    v2 = await client.post("/v2/models/cvae-sample/infer", json={"inputs": [], "parameters": {"digit": digit}})
    assert v2.status_code == 422 and "digit" in v2.json()["error"], v2.text


@pytest.mark.parametrize("text", ["10", "-1", "٣", "³", "seven", ""])
async def test_a_bad_digit_in_the_query_is_a_422(client, text):
    r = await client.post(f"/encode?model=cvae&digit={text}", content=_npy(IMAGES[:1]),
                          headers={"content-type": "application/x-npy"})
    assert r.status_code == 422 and r.json()["type"] == "invalid_input", r.text


async def test_digits_the_model_cannot_take_are_422s_that_say_why(client):
    no_density = await client.post("/sample?model=pca", json={"n": 1, "digit": 1})
    assert no_density.status_code == 422 and "derive --add classes" in no_density.json()["detail"]
    unconditional = await client.post("/encode?model=vae", json={"images": IMAGES[:1].tolist(), "digit": 1})
    assert unconditional.status_code == 422 and "not conditioned" in unconditional.json()["detail"]


async def test_the_page_reads_each_digits_distribution(client, artifacts_dir):
    fitted = (await client.get("/models/vae/versions/1/classes")).json()
    density = reference(artifacts_dir, "vae").class_density
    assert fitted["native"] is False and (fitted["classes"], fitted["components"]) == (10, 1)
    np.testing.assert_allclose(fitted["loc"], density.loc.numpy(), atol=1e-6)
    np.testing.assert_allclose(fitted["covariance"], (density.scale_tril @ density.scale_tril.mT).numpy(), atol=1e-6)
    native = (await client.get("/models/cvae/versions/1/classes")).json()
    assert native["native"] is True and native["covariance"][7][0] == [[1.0, 0.0], [0.0, 1.0]]
    missing = await client.get("/models/pca/versions/1/classes")
    assert missing.status_code == 404 and "derive --add classes" in missing.json()["detail"]
