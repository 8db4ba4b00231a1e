"""The Open Inference Protocol routes through the ASGI transport: metadata, readiness, every operation with JSON and
binary tensors (answers equal to the service's own routes), and a table of bad protocol inputs, each a 4xx."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from service.oip_tensors import HEADER_LENGTH
from tests.factories import LATENT_DIM
from tests.helpers import IMAGES, IMAGES_U8, reference, run
from tests.serving import block, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the service runs on asyncio (uvicorn); trio is in the virtualenv for other tools


LATENTS = np.array([[0.0, 0.5], [-1.0, 2.0]], np.float32)[:, :LATENT_DIM]


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.reshape(-1).tolist()}


def binary_body(inputs: list[tuple[str, np.ndarray, str]], **extra) -> tuple[bytes, dict]:
    """A request with every input in the binary tail, and its Inference-Header-Content-Length header."""
    header = {"inputs": [{"name": n, "datatype": t, "shape": list(a.shape),
                          "parameters": {"binary_data_size": a.nbytes}} for n, a, t in inputs], **extra}
    text = orjson.dumps(header)
    return text + b"".join(a.tobytes() for _, a, _ in inputs), {HEADER_LENGTH: str(len(text))}


def split_reply(r) -> tuple[dict, dict[str, np.ndarray]]:
    """The reply's JSON and its outputs as arrays, read from the binary tail where the header says so."""
    length = r.headers.get(HEADER_LENGTH)
    header = orjson.loads(r.content if length is None else r.content[:int(length)])
    offset, arrays = int(length or 0), {}
    for out in header["outputs"]:
        assert out["datatype"] == "FP32"
        if "data" in out:
            arrays[out["name"]] = np.array(out["data"], np.float32).reshape(out["shape"])
        else:
            size = out["parameters"]["binary_data_size"]
            arrays[out["name"]] = np.frombuffer(r.content, np.float32, size // 4, offset).reshape(out["shape"])
            offset += size
    assert offset == (len(r.content) if length else 0)
    return header, arrays


async def test_server_metadata_advertises_binary_tensors(client):
    r = await client.get("/v2")
    assert r.status_code == 200
    assert r.json() == {"name": "latentserve", "version": client.app.version, "extensions": ["binary_tensor_data"]}


async def test_health_routes(client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    client.app.state.service.drain()
    r = await client.get("/v2/health/ready")
    assert r.status_code == 503 and r.headers["retry-after"] and "draining" in r.json()["error"]
    assert (await client.get("/v2/models/vae-encode/ready")).status_code == 503


@pytest.mark.parametrize("path", ["/v2/models/vae-encode", "/v2/models/vae-encode/versions/1"])
async def test_model_metadata_describes_every_tensor(client, path):
    r = await client.get(path)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "vae-encode", "versions": ["1"], "platform": "latentserve_vae",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 784]}],
        "outputs": [{"name": "mean", "datatype": "FP32", "shape": [-1, LATENT_DIM]},
                    {"name": "scale", "datatype": "FP32", "shape": [-1, LATENT_DIM]}]}


async def test_metadata_of_every_operation_lists_its_outputs(client):
    outputs = {}
    for name in ("ae-encode", "vae-decode", "vae-reconstruct", "ae-reconstruct", "vae-sample"):
        r = await client.get(f"/v2/models/{name}")
        assert r.status_code == 200, r.text
        outputs[name] = [t["name"] for t in r.json()["outputs"]]
    assert outputs == {"ae-encode": ["mean"], "vae-decode": ["images"], "vae-reconstruct": ["images", "mean", "scale"],
                       "ae-reconstruct": ["images", "mean"], "vae-sample": ["latents", "images"]}
    r = await client.get("/v2/models/vae-sample")
    assert r.json()["inputs"] == [{"name": "seed", "datatype": "INT64", "shape": [1]}]


async def test_metadata_lists_every_loaded_version(artifacts_dir):
    from tests.factories import write

    write(artifacts_dir, "vae", "vae", seed=3)
    async with serve(artifacts_dir) as client:
        r = await client.get("/v2/models/vae-decode/versions/1")
        assert r.json()["versions"] == ["1", "2"]
        assert (await client.get("/v2/models/vae-decode/versions/2/ready")).json() == {"name": "vae-decode",
                                                                                      "ready": True}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_encode_equals_the_services_own_encode(client, artifacts_dir, binary):
    if binary:
        content, headers = binary_body([("images", IMAGES, "FP32")], parameters={"binary_data_output": True})
    else:
        content, headers = orjson.dumps({"id": "r1", "inputs": [tensor("images", IMAGES)]}), {}
    r = await client.post("/v2/models/vae-encode/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    assert (HEADER_LENGTH in r.headers) == binary
    header, out = split_reply(r)
    assert (header["model_name"], header["model_version"]) == ("vae-encode", "1")
    assert header.get("id") == (None if binary else "r1")
    own = (await client.post("/encode", json={"images": IMAGES.tolist()})).json()
    np.testing.assert_allclose(out["mean"], own["mean"], atol=1e-6)
    np.testing.assert_allclose(out["scale"], own["scale"], atol=1e-6)
    np.testing.assert_allclose(out["mean"], run(reference(artifacts_dir, "vae").encode, IMAGES)[0], atol=1e-5)


async def test_uint8_28x28_images_as_binary_equal_float_pixels(client):
    content, headers = binary_body([("images", IMAGES_U8, "UINT8")])
    r = await client.post("/v2/models/ae-encode/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    own = (await client.post("/encode?model=ae", json={"images": IMAGES.tolist()})).json()
    np.testing.assert_allclose(split_reply(r)[1]["mean"], own["mean"], atol=1e-6)


async def test_nested_json_data_reads_row_major(client):
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [3, 28, 28],
                        "data": IMAGES.reshape(3, 28, 28).tolist()}]}
    r = await client.post("/v2/models/vae-encode/infer", json=body)
    own = (await client.post("/encode", json={"images": IMAGES.tolist()})).json()
    np.testing.assert_allclose(split_reply(r)[1]["mean"], own["mean"], atol=1e-6)


async def test_decode_with_a_binary_output_asked_for_by_name(client):
    body = {"inputs": [tensor("latents", LATENTS)], "outputs": [{"name": "images", "parameters": {"binary_data": True}}]}
    r = await client.post("/v2/models/vae-decode/versions/1/infer", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    own = (await client.post("/decode", json={"latents": LATENTS.tolist()})).json()
    np.testing.assert_allclose(split_reply(r)[1]["images"], own["images"], atol=1e-6)


async def test_reconstruct_with_sample_and_seed_equals_the_services_own(client):
    body = {"inputs": [tensor("images", IMAGES)], "parameters": {"sample": True, "seed": 7},
            "outputs": [{"name": "scale"}, {"name": "images"}]}
    r = await client.post("/v2/models/vae-reconstruct/infer", json=body)
    assert r.status_code == 200, r.text
    header, out = split_reply(r)
    assert [o["name"] for o in header["outputs"]] == ["scale", "images"]
    own = (await client.post("/reconstruct", json={"images": IMAGES.tolist(), "sample": True, "seed": 7})).json()
    np.testing.assert_allclose(out["images"], own["images"], atol=1e-6)
    np.testing.assert_allclose(out["scale"], own["scale"], atol=1e-6)


@pytest.mark.parametrize("how", ["parameter", "input"])
async def test_sample_count_and_seed_equal_the_services_own(client, how):
    if how == "input":
        body = {"inputs": [tensor("seed", np.array([5]), "INT64")], "parameters": {"count": 4}}
    else:
        body = {"inputs": [], "parameters": {"count": 4, "seed": 5}}
    r = await client.post("/v2/models/vae-sample/infer", json=body)
    assert r.status_code == 200, r.text
    out = split_reply(r)[1]
    own = (await client.post("/sample", json={"n": 4, "seed": 5})).json()
    np.testing.assert_allclose(out["latents"], own["latents"], atol=1e-6)
    np.testing.assert_allclose(out["images"], own["images"], atol=1e-6)
    assert out["images"].shape == (4, 784)


async def test_service_routes_keep_their_own_error_body(client):
    r = await client.post("/encode", json={"images": [[2.0] * 784]})
    assert r.status_code == 422 and set(r.json()) == {"detail", "type"}


async def test_auth_and_body_limit_speak_the_protocol_on_v2(artifacts_dir):
    async with serve(artifacts_dir, api_key="k", max_body_bytes=4096) as client:
        r = await client.get("/v2")
        assert r.status_code == 401 and set(r.json()) == {"error"} and r.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v2/health/ready")).status_code == 200  # probes need no key
        r = await client.post("/v2/models/vae-encode/infer", headers={"Authorization": "Bearer k"},
                              json={"inputs": [tensor("images", IMAGES)]})
        assert r.status_code == 413 and "exceeds" in r.json()["error"]
        assert set((await client.get("/models")).json()) == {"detail", "type"}


def _body(images=None, **tensor_fields) -> dict:
    return {"inputs": [{**tensor("images", IMAGES[:1] if images is None else images), **tensor_fields}]}


HEADER_1 = orjson.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784],
                                     "parameters": {"binary_data_size": 3136}}]})
BAD = {
    # name: (path, body bytes or JSON, headers, status)
    "bad JSON": ("vae-encode", b'{"inputs": [', {}, 422),
    "not an object": ("vae-encode", b"[1, 2]", {}, 422),
    "unknown model": ("vea-encode", _body(), {}, 404),
    "unknown operation": ("vae-embed", _body(), {}, 404),
    "no operation": ("vae", _body(), {}, 404),
    "empty model name": ("-encode", _body(), {}, 404),
    "unknown version": ("vae-encode/versions/9", _body(), {}, 404),
    "non-numeric version": ("vae-encode/versions/latest", _body(), {}, 404),
    # Versions are ASCII [1-9][0-9]*, as the folders are named: not int()'s wider idea of a digit.
    "superscript version": ("vae-encode/versions/²", _body(), {}, 404),
    "Arabic-Indic version": ("vae-encode/versions/١", _body(), {}, 404),
    "zero-padded version": ("vae-encode/versions/01", _body(), {}, 404),
    "unknown output": ("vae-encode", {**_body(), "outputs": [{"name": "images"}]}, {}, 422),
    "unknown input": ("vae-encode", {"inputs": [tensor("pixels", IMAGES[:1])]}, {}, 422),
    "missing input": ("vae-encode", {"inputs": []}, {}, 422),
    "input twice": ("vae-encode", {"inputs": _body()["inputs"] * 2}, {}, 422),
    "wrong datatype": ("vae-encode", _body(datatype="INT32"), {}, 422),
    "unknown datatype": ("vae-encode", _body(datatype="FLOAT"), {}, 422),
    "datatype not a string": ("vae-encode", _body(datatype=["FP32"]), {}, 422),
    "BYTES": ("vae-encode", _body(datatype="BYTES"), {}, 422),
    "shape mismatch": ("vae-encode", _body(shape=[2, 784]), {}, 422),
    "negative shape": ("vae-encode", _body(shape=[-1, 784]), {}, 422),
    "784 is not 28x28": ("vae-encode", _body(IMAGES[:1].reshape(1, 28, 28)[:, :, :27].copy()), {}, 422),
    "strings as data": ("vae-encode", _body(data=["a"] * 784), {}, 422),
    "pixels above 1": ("vae-encode", _body(IMAGES[:1] * 4), {}, 422),
    "uint8 out of range": ("vae-encode", _body(datatype="UINT8", data=[300] * 784), {}, 422),
    "uint8 from floats": ("vae-encode", _body(datatype="UINT8", data=[0.5] * 784), {}, 422),
    "no data": ("vae-encode", {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784]}]}, {}, 422),
    "latents of the wrong width": ("vae-decode", {"inputs": [tensor("latents", np.zeros((1, 5), np.float32))]}, {},
                                   422),
    "too many images": ("vae-encode", _body(np.zeros((65, 784), np.float32)), {}, 413),
    "sample flag not a bool": ("vae-reconstruct", {**_body(), "parameters": {"sample": "yes"}}, {}, 422),
    "seed out of range": ("vae-reconstruct", {**_body(), "parameters": {"sample": True, "seed": -1}}, {}, 422),
    "count not an integer": ("vae-sample", {"inputs": [], "parameters": {"count": "4"}}, {}, 422),
    "count zero": ("vae-sample", {"inputs": [], "parameters": {"count": 0}}, {}, 422),
    "seed twice": ("vae-sample", {"inputs": [tensor("seed", np.array([1]), "INT64")], "parameters": {"seed": 1}}, {},
                   422),
    "superscript header length": ("vae-encode", HEADER_1 + bytes(3136), {HEADER_LENGTH: "²".encode("latin-1")}, 422),
    "binary size not adding up": ("vae-encode", HEADER_1 + bytes(3000), {HEADER_LENGTH: str(len(HEADER_1))}, 422),
    "binary tail longer than sizes": ("vae-encode", HEADER_1 + bytes(4000), {HEADER_LENGTH: str(len(HEADER_1))}, 422),
    "binary size not the shape's": ("vae-encode", HEADER_1.replace(b"3136", b"3132") + bytes(3132),
                                    {HEADER_LENGTH: str(len(HEADER_1) - 0)}, 422),
    "header length past the body": ("vae-encode", HEADER_1, {HEADER_LENGTH: "100000"}, 422),
    "header length not a number": ("vae-encode", HEADER_1, {HEADER_LENGTH: "ten"}, 422),
    "wrong content type": ("vae-encode", _body(), {"content-type": "text/plain"}, 415),
    # Issue 17: shapes are bounded before their product is taken (this one was a 500), on both paths; non-float data
    # parses into its datatype (strings were a fixed-width string array first); flags and outputs follow one rule.
    "20,000 dimensions": ("vae-encode", _body(shape=[2] * 20000), {}, 422),
    "20,000 dimensions, binary": ("vae-encode", HEADER_1.replace(b"[1,784]", b"[" + b"2," * 19999 + b"2]")
                                  + bytes(3136), {HEADER_LENGTH: str(len(HEADER_1) + 39994)}, 422),
    "one huge dimension": ("vae-encode", _body(shape=[2**63 - 1, 784]), {}, 422),
    "uint8 strings": ("vae-encode", _body(datatype="UINT8", data=[""] * 783 + ["x" * 1000]), {}, 422),
    "seed as a string": ("vae-sample", {"inputs": [{"name": "seed", "datatype": "INT64", "shape": [1],
                                                    "data": ["7"]}]}, {}, 422),
    "binary_data_output not a bool": ("vae-encode", {**_body(), "parameters": {"binary_data_output": "yes"}}, {},
                                      422),
    "output asked for twice": ("vae-encode", {**_body(), "outputs": [{"name": "mean"}, {"name": "mean"}]}, {}, 422),
}


@pytest.mark.parametrize("case", BAD)
async def test_bad_protocol_input_is_a_4xx_with_the_protocol_error_body(client, case):
    name, body, headers, status = BAD[case]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = await client.post(f"/v2/models/{name}/infer", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]


async def test_unknown_model_metadata_and_unknown_route_are_404s(client):
    for path in ("/v2/models/vea-encode", "/v2/models/vae-encode/versions/3/ready", "/v2/nothing"):
        r = await client.get(path)
        assert r.status_code == 404 and set(r.json()) == {"error"}, path


async def test_full_queue_is_a_503_with_retry_after_and_a_slow_one_a_504(artifacts_dir):
    async with serve(artifacts_dir, max_queue_items=4, request_timeout_s=0.5) as client:
        gate = block(client)
        infer = "/v2/models/vae-encode/infer"
        first = asyncio.create_task(client.post(infer, json=_body()))
        while client.app.state.service.activity.computing == 0:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(client.post(infer, json=_body(np.zeros((4, 784), np.float32))))
        while client.app.state.service.registry.get("vae", 1).batchers["encode"].queued_items < 4:
            await asyncio.sleep(0.01)
        refused = await client.post(infer, json=_body())
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert set(refused.json()) == {"error"}
        timed_out = await queued  # waited in the queue past request_timeout_s behind the held batch
        assert timed_out.status_code == 504 and set(timed_out.json()) == {"error"}
        gate.set()
        assert (await first).status_code == 504  # held past the timeout too
        assert (await client.post(infer, json=_body())).status_code == 200
