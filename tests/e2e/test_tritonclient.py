"""Triton's own HTTP client (`tritonclient[http]`) against a real uvicorn process: server and model metadata,
readiness, and encode / decode / reconstruct / sample with JSON and binary tensors, each equal to the service's own
routes; Triton's model configuration, repository index and statistics. (KServe's InferenceRESTClient is not used: the `kserve` package would downgrade python-dateutil here.)"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.factories import LATENT_DIM
from tests.helpers import IMAGES, IMAGES_U8

pytestmark = pytest.mark.slow
LATENTS = np.array([[0.0, 0.5], [-1.0, 2.0]], np.float32)[:, :LATENT_DIM]


@pytest.fixture
def urls(live_server):
    _, url = live_server()
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    yield client, url
    client.close()


def own(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def infer(client, name: str, inputs: dict[str, np.ndarray], binary: bool, outputs: list[str], **kwargs) -> dict:
    """tritonclient's infer with every tensor as binary or as JSON; the outputs by name as arrays."""
    tensors = []
    for key, array in inputs.items():
        t = triton.InferInput(key, list(array.shape), {np.float32: "FP32", np.uint8: "UINT8"}[array.dtype.type])
        t.set_data_from_numpy(array, binary_data=binary)
        tensors.append(t)
    wanted = [triton.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    result = client.infer(name, tensors, outputs=wanted, **kwargs)
    return {o: result.as_numpy(o) for o in outputs}


def test_server_and_model_metadata_and_readiness(urls):
    client, _ = urls
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("vae-encode") and client.is_model_ready("vae-encode", "1")
    assert not client.is_model_ready("vae-embed")
    meta = client.get_server_metadata()
    assert meta["name"] == "latentserve"
    assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(meta["extensions"])
    model = client.get_model_metadata("vae-reconstruct", "1")
    assert model["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]] == [
        ("images", "FP32", [-1, 784]), ("mean", "FP32", [-1, LATENT_DIM]), ("scale", "FP32", [-1, LATENT_DIM])]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_operations_equal_the_services_own_routes(urls, binary):
    client, url = urls
    out = infer(client, "vae-encode", {"images": IMAGES}, binary, ["mean", "scale"])
    reply = own(url, "/encode", {"images": IMAGES.tolist()})
    np.testing.assert_allclose(out["mean"], reply["mean"], atol=1e-6)
    np.testing.assert_allclose(out["scale"], reply["scale"], atol=1e-6)

    out = infer(client, "ae-encode", {"images": IMAGES_U8}, binary, ["mean"])
    np.testing.assert_allclose(out["mean"], own(url, "/encode?model=ae", {"images": IMAGES.tolist()})["mean"],
                               atol=1e-6)

    out = infer(client, "vae-decode", {"latents": LATENTS}, binary, ["images"])
    np.testing.assert_allclose(out["images"], own(url, "/decode", {"latents": LATENTS.tolist()})["images"], atol=1e-6)

    out = infer(client, "vae-reconstruct", {"images": IMAGES}, binary, ["images", "scale"],
                parameters={"sample": True, "seed": 11})
    reply = own(url, "/reconstruct", {"images": IMAGES.tolist(), "sample": True, "seed": 11})
    np.testing.assert_allclose(out["images"], reply["images"], atol=1e-6)
    np.testing.assert_allclose(out["scale"], reply["scale"], atol=1e-6)


def test_sample_with_a_seed_input_and_default_binary_outputs(urls):
    client, url = urls
    seed = triton.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([3], np.int64))  # binary, as tritonclient sends by default
    result = client.infer("vae-sample", [seed], parameters={"count": 5})  # no outputs named: all, in binary
    reply = own(url, "/sample", {"n": 5, "seed": 3})
    np.testing.assert_allclose(result.as_numpy("latents"), reply["latents"], atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("images"), reply["images"], atol=1e-6)
    result = client.infer("vae-sample", [], parameters={"count": 2, "seed": 4})  # no inputs at all
    np.testing.assert_allclose(result.as_numpy("latents"), own(url, "/sample", {"n": 2, "seed": 4})["latents"],
                               atol=1e-6)


def test_bad_input_reaches_the_client_as_a_4xx_with_the_servers_message(urls):
    client, _ = urls
    wrong = triton.InferInput("images", [1, 783], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 783), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("vae-encode", [wrong])
    assert raised.value.status() == "422" and "784" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("vae-embed")
    assert raised.value.status() == "404"


def test_model_configuration_and_repository_index(urls):
    client, _ = urls
    config = client.get_model_config("vae-encode", "1")
    assert config["name"] == "vae-encode" and config["max_batch_size"] > 0
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("images", "TYPE_FP32", [784])]
    assert [(t["name"], t["dims"]) for t in config["output"]] == [("mean", [LATENT_DIM]), ("scale", [LATENT_DIM])]
    assert [t["name"] for t in client.get_model_config("ae-encode")["output"]] == ["mean"]  # the AE has no scale
    index = client.get_model_repository_index()
    assert {"name": "vae-sample", "version": "1", "state": "READY"} in index
    assert {entry["name"] for entry in index} >= {f"{m}-{op}" for m in ("pca", "ae", "vae")
                                                  for op in ("encode", "decode", "reconstruct", "sample")}
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as raised:
            call("vae-encode")
        assert raised.value.status() == "400" and "not supported" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_config("vae-embed")
    assert raised.value.status() == "404"


def test_statistics_count_requests_items_and_batch_sizes(urls):
    client, _ = urls
    before = client.get_inference_statistics("vae-decode", "1")["model_stats"][0]
    assert before["inference_count"] == 0 and before["batch_stats"] == []
    for latents in (LATENTS, LATENTS[:1], LATENTS[:1]):
        infer(client, "vae-decode", {"latents": latents}, True, ["images"])
    stats = client.get_inference_statistics("vae-decode", "1")["model_stats"][0]
    assert (stats["name"], stats["version"]) == ("vae-decode", "1")
    # Sequential requests: one batch each, of 2, 1 and 1 items.
    assert stats["inference_count"] == 4 and stats["execution_count"] == 3
    assert stats["inference_stats"]["queue"]["count"] == 3 and stats["inference_stats"]["success"]["count"] == 3
    compute = stats["inference_stats"]["compute_infer"]
    assert compute["count"] == 3 and compute["ns"] > 0
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [(1, 2), (2, 1)]
    assert stats["last_inference"] > 0
    every = client.get_inference_statistics()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} >= {("vae-decode", "1"), ("pca-encode", "1")}
    assert next(s for s in every if s["name"] == "vae-decode")["inference_count"] == 4
