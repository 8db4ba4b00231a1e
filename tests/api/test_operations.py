"""The operation table (service/operations.py): every operation it lists is served by both route families, for every
model, with equal answers; and its noise keys give a request the same draws whatever batches its rows land in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.operations import KEY_COLS, OPERATIONS, Operation, noise, noise_keys
from tests.helpers import IMAGES

pytestmark = pytest.mark.anyio

MODELS = ("pca", "ae", "vae", "cvae")
# A value for each parameter any operation takes; digit only where the model takes one (tests/api/test_digits.py).
PARAMS = {"seed": 3, "sample": True, "count": 2, "samples": 8, "digit": 7}


def _params(op: Operation, served) -> dict:
    takes_digit = served.conditional or (op.name == "sample" and served.digits)
    return {p.name: PARAMS[p.name] for p in op.params if p.name != "digit" or takes_digit}


def _inputs(op: Operation, latent_dim: int) -> dict[str, np.ndarray]:
    arrays = {"images": IMAGES[:2], "latents": np.array([[0.5] * latent_dim, [-1.0] * latent_dim], np.float32)}
    return {i.name: arrays[i.name] for i in op.inputs}


def _protocol_body(op: Operation, inputs: dict[str, np.ndarray], params: dict) -> dict:
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": list(a.shape), "data": a.reshape(-1).tolist()}
                       for name, a in inputs.items()],
            "parameters": params}


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("model", MODELS)
async def test_every_operation_is_served_by_both_route_families(client, model, name):
    op = OPERATIONS[name]
    served = client.app.state.service.registry.get(model, None)
    inputs = _inputs(op, served.latent_dim)
    params = _params(op, served)
    native = await client.post(f"/{name}?model={model}", json={**{k: a.tolist() for k, a in inputs.items()}, **params})
    assert native.status_code == 200, native.text
    protocol = await client.post(f"/v2/models/{model}-{name}/infer", json=_protocol_body(op, inputs, params))
    assert protocol.status_code == 200, protocol.text
    given = [out.name for out in op.given(served)]
    assert [out["name"] for out in protocol.json()["outputs"]] == given
    body = native.json()
    assert (body["model"], body["version"]) == (model, served.version)
    assert set(body) == {"model", "version", *(out.name for out in op.outputs)} | ({"samples"} if name == "score"
                                                                                     else set())
    for out in protocol.json()["outputs"]:
        expected = np.array(body[out["name"]], np.float64).reshape(-1)
        np.testing.assert_allclose(np.array(out["data"], np.float64), expected, rtol=1e-5, atol=1e-6)
        assert out["shape"][0] == len(body[out["name"]])


async def test_protocol_metadata_lists_every_operation_of_the_table(client):
    for name, op in OPERATIONS.items():
        r = await client.get(f"/v2/models/vae-{name}")
        assert r.status_code == 200, r.text
        assert [t["name"] for t in r.json()["inputs"] if t["name"] != "seed"] == [i.name for i in op.inputs]


def test_a_requests_noise_does_not_depend_on_how_its_rows_are_batched():
    k = 2
    a, b = noise_keys(5, 11), noise_keys(3, 12)
    whole_a = torch.randn((5, k), generator=torch.Generator().manual_seed(11)).numpy()
    whole_b = torch.randn((3, k), generator=torch.Generator().manual_seed(12)).numpy()
    # a's rows split over two batches, b's between them, and a second request with a's seed right after a's rows.
    first = noise(np.concatenate([a[:2], b]), k)
    second = noise(np.concatenate([a[2:], a]), k)
    np.testing.assert_array_equal(first[:2], whole_a[:2])
    np.testing.assert_array_equal(first[2:], whole_b)
    np.testing.assert_array_equal(second[:3], whole_a[2:])
    np.testing.assert_array_equal(second[3:], whole_a)


def test_rows_without_noise_get_zeros_and_keys_hold_any_seed():
    keys = noise_keys(4, None)
    assert keys.shape == (4, KEY_COLS)
    np.testing.assert_array_equal(noise(keys, 3), np.zeros((4, 3), np.float32))
    big = noise_keys(2, 2**63 - 1)  # every bit of the seed survives the float32 words (NaN patterns included)
    assert np.ascontiguousarray(big[:, :2]).view(np.uint64)[0, 0] == 2**63 - 1
    np.testing.assert_array_equal(
        noise(big, 2), torch.randn((2, 2), generator=torch.Generator().manual_seed(2**63 - 1)).numpy())


async def test_an_unexpected_error_is_a_500_in_each_familys_own_body(client, monkeypatch):
    """A bug in a handler is rendered outside every middleware: still the protocol's body under /v2."""
    import httpx

    import service.oip_models
    import service.routes

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.oip_models, "rows", broken)
    monkeypatch.setattr(service.routes, "_parse", broken)
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as plain:
        protocol = await plain.post("/v2/models/vae-encode/infer", json=_protocol_body(
            OPERATIONS["encode"], {"images": IMAGES[:1]}, {}))
        native = await plain.post("/encode", json={"images": IMAGES[:1].tolist()})
    assert (protocol.status_code, protocol.json()) == (
        500, {"error": "internal", "request_id": protocol.headers["x-request-id"]})
    assert (native.status_code, native.json()) == (
        500, {"detail": "internal", "type": "internal", "request_id": native.headers["x-request-id"]})


async def test_non_finite_outputs_are_a_422_in_both_families_never_nulls(client):
    """Latents near the float32 maximum overflow a trained model's first layer (inf - inf); the tiny test models
    saturate instead, so the batch function here gives what such a model gives."""
    batcher = client.app.state.service.registry.get("vae", None).batchers["decode"]
    real = batcher.fn

    def overflowing(parts):
        (images,) = real(parts)
        images[:, 0] = np.nan
        return (images,)

    batcher.fn = overflowing
    native = await client.post("/decode?model=vae", json={"latents": [[3e38, -3e38]]})
    protocol = await client.post("/v2/models/vae-decode/infer", json={"inputs": [
        {"name": "latents", "datatype": "FP32", "shape": [1, 2], "data": [3e38, -3e38]}]})
    assert native.status_code == protocol.status_code == 422, (native.text, protocol.text)
    assert "not finite" in native.json()["detail"] and "not finite" in protocol.json()["error"]
