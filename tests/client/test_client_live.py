"""Client and AsyncClient against a real uvicorn process of the service (tests/client/conftest.py): every method,
.npy and JSON bodies, PNG and PIL inputs, splitting at the server's limit, version pinning and the API key. Answers
are compared with the same artifacts run in-process."""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
import pytest
import torch
from latentserve_client import (
    AsyncClient,
    Client,
    ClientTimeout,
    InvalidInput,
    Unauthorized,
    UnknownModel,
)
from PIL import Image

from tests.client.common import API_KEY, MAX_ITEMS
from tests.helpers import IMAGES, IMAGES_U8, free_port, png_bytes, reference, run

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(7)
MANY_U8 = RNG.integers(0, 256, (150, 28, 28), dtype=np.uint8)  # more than MAX_ITEMS: split into 3 requests


def call(kind: str, url: str, method: str, *args, client_kw: dict | None = None, **kwargs):
    """`method` of a fresh Client, or of a fresh AsyncClient in its own event loop; the client is returned too."""
    client_kw = {"api_key": API_KEY, **(client_kw or {})}
    if kind == "sync":
        with Client(url, **client_kw) as client:
            return getattr(client, method)(*args, **kwargs), client

    async def go():
        async with AsyncClient(url, **client_kw) as client:
            return await getattr(client, method)(*args, **kwargs), client

    return asyncio.run(go())


@pytest.fixture(params=["sync", "async"])
def api(request, live):
    """api("encode", x, format="json") -> the result, through Client or AsyncClient."""
    return lambda method, *args, **kwargs: call(request.param, live.url, method, *args, **kwargs)[0]


@pytest.fixture(params=["sync", "async"])
def api_with_client(request, live):
    return functools.partial(call, request.param, live.url)


@functools.cache
def _model(artifacts, name: str, version: int):
    return reference(artifacts, name, version)


def in_process(live, name: str, version: int, op: str, *args):
    """The same artifact's `op` run in-process, for comparison."""
    return run(getattr(_model(live.artifacts, name, version), op), *args)


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_encode_matches_the_model_in_process(api, live, fmt):
    posterior = api("encode", IMAGES_U8, format=fmt)
    z_loc, z_scale = in_process(live, "vae", 2, "encode", IMAGES)
    assert (posterior.model, posterior.version) == ("vae", 2)
    assert posterior.mean.dtype == np.float32 and posterior.mean.shape == (3, 2)
    np.testing.assert_allclose(posterior.mean, z_loc.numpy(), atol=1e-5)
    np.testing.assert_allclose(posterior.scale, z_scale.numpy(), atol=1e-5)


def test_encode_with_the_autoencoder_has_no_scale(api):
    posterior = api("encode", IMAGES, model="ae")
    assert posterior.scale is None and posterior.mean.shape == (3, 2) and posterior.model == "ae"


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_decode_matches_the_model_in_process(api, live, fmt):
    z = np.array([[0.5, -1.2], [0.0, 0.0]], np.float32)
    images = api("decode", z, format=fmt)
    assert images.shape == (2, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images.reshape(2, 784), in_process(live, "vae", 2, "decode", z).numpy(), atol=1e-5)
    assert api("decode", [0.5, -1.2], format=fmt).shape == (1, 28, 28)  # one code


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_reconstruct_through_the_mean_matches_in_process(api, live, fmt):
    images = api("reconstruct", IMAGES_U8, format=fmt)
    x_loc, _, _ = in_process(live, "vae", 2, "reconstruct", IMAGES, np.zeros((3, 2), np.float32))
    np.testing.assert_allclose(images.reshape(3, 784), x_loc.numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_seeded_reconstruct_and_sample_repeat(api, fmt):
    a = api("reconstruct", IMAGES_U8, True, 5, format=fmt)
    assert np.array_equal(a, api("reconstruct", IMAGES_U8, True, 5, format=fmt))
    assert not np.allclose(a, api("reconstruct", IMAGES_U8, True, 6, format=fmt))
    s = api("sample", 5, seed=3, format=fmt)
    assert s.shape == (5, 28, 28) and np.array_equal(s, api("sample", 5, seed=3, format=fmt))
    assert not np.allclose(s, api("sample", 5, seed=4, format=fmt))


def test_sample_matches_the_prior_in_process(api, live):
    eps = torch.randn((5, 2), generator=torch.Generator().manual_seed(3)).numpy()  # the service's noise for seed 3
    _, x_loc = in_process(live, "vae", 2, "sample", eps)
    np.testing.assert_allclose(api("sample", 5, seed=3).reshape(5, 784), x_loc.numpy(), atol=1e-5)


def test_png_paths_bytes_and_pil_images_equal_the_array(api, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(IMAGES_U8[0]))
    pil = Image.fromarray(IMAGES_U8[1]).convert("RGB")  # colour becomes luminance, as the server does
    expected = api("encode", IMAGES_U8[:3]).mean
    for fmt in ("npy", "json"):
        got = api("encode", [path, pil, png_bytes(IMAGES_U8[2])], format=fmt).mean
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(api("encode", str(path)).mean, expected[:1], atol=1e-5)


def test_large_inputs_are_split_at_the_limit_learned_from_a_413(api_with_client, live):
    # The client starts at the service's default of 1,024 and learns the server's 64 from the first 413.
    posterior, client = api_with_client("encode", MANY_U8)
    assert client.max_items_per_request == MAX_ITEMS
    z_loc, _ = in_process(live, "vae", 2, "encode", MANY_U8.reshape(150, 784) / np.float32(255))
    np.testing.assert_allclose(posterior.mean, z_loc.numpy(), atol=1e-5)  # in order
    images, client = api_with_client("decode", posterior.mean, client_kw={"max_items_per_request": 50})
    assert client.max_items_per_request == 50  # known up front: never asked too much
    np.testing.assert_allclose(images.reshape(150, 784), in_process(live, "vae", 2, "decode", posterior.mean).numpy(),
                               atol=1e-5)


def test_a_split_seeded_sample_repeats_part_by_part(api):
    # The parts travel concurrently and may share a batch, and a matrix product over more rows can round the last
    # bit differently: the same noise gives the same digits to float tolerance, not bit for bit.
    same = functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-6)
    whole = api("sample", 100, seed=7)  # 64 + 36 with seeds 7 and 8
    assert whole.shape == (100, 28, 28)
    same(whole[:64], api("sample", 64, seed=7))
    same(whole[64:], api("sample", 36, seed=8))
    parts = api("reconstruct", MANY_U8, True, 1)
    same(parts[64:128], api("reconstruct", MANY_U8[64:128], True, 2))
    assert not np.allclose(parts[64:128], api("reconstruct", MANY_U8[64:128], True, 1))  # the part's own seed


def test_version_pinning_per_client_and_per_call(api, live):
    pinned = call("sync", live.url, "encode", IMAGES, client_kw={"model": "vae", "version": 1})[0]
    z_loc, _ = in_process(live, "vae", 1, "encode", IMAGES)
    assert pinned.version == 1
    np.testing.assert_allclose(pinned.mean, z_loc.numpy(), atol=1e-5)
    assert api("encode", IMAGES, version=1).version == 1
    assert api("encode", IMAGES, client_kw={"version": 1}, version=2).version == 2  # the call's version wins
    # A pinned version belongs to the client's model: a call naming another model gets that model's newest.
    assert api("encode", IMAGES, client_kw={"model": "vae", "version": 2}, model="pca").model == "pca"
    with pytest.raises(UnknownModel) as err:
        api("encode", IMAGES, version=9)
    assert err.value.status == 404 and "no loaded version 9" in err.value.detail


def test_models_and_model(api):
    overview = api("models")
    assert overview["default_model"] == "vae"
    assert {m["name"]: m["versions"] for m in overview["models"]}["vae"] == [1, 2]
    assert [v["version"] for v in api("model", "vae")["versions"]] == [1, 2]
    with pytest.raises(UnknownModel):
        api("model", "nope")


def test_the_api_key_is_sent_and_a_missing_one_is_unauthorized(api):
    for key in (None, "wrong"):
        with pytest.raises(Unauthorized) as err:
            api("encode", IMAGES, client_kw={"api_key": key})
        assert err.value.status == 401 and "Bearer" in err.value.detail
    assert api("ready", client_kw={"api_key": None}) is True  # the probes are public


def test_invalid_input_carries_the_servers_detail(api):
    with pytest.raises(InvalidInput) as err:
        api("encode", np.full((2, 784), 2.0, np.float32))
    assert err.value.status == 422 and "pixels must lie in [0, 1]" in err.value.detail


def test_wait_ready_returns_when_ready_and_times_out_when_nobody_answers(api, live):
    assert api("wait_ready", 5) is None
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ClientTimeout):
        call("sync", dead, "wait_ready", 0.5)
    assert time.monotonic() - start < 3
    assert call("sync", dead, "ready")[0] is False
