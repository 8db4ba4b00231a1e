"""Every bad request gets its 4xx with a JSON `{"detail", "type"}` body; overload, timeouts and failing batches
get 503 + Retry-After, 504 and 500, and the service keeps serving."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service import routes
from service.errors import ClientClosedRequest
from tests.serving import block, serve
from tests.helpers import IMAGES, npy, png_b64, until

pytestmark = pytest.mark.anyio
ONE = [[0.5] * 784]


async def _chunks():
    for _ in range(2):
        yield b"x" * 40_000

NPY = {"content-type": "application/x-npy"}

BAD_REQUESTS = [
    # (id, method, path, request kwargs, status, type)
    ("783 pixels", "post", "/encode", {"json": {"images": [[0.5] * 783]}}, 422, "invalid_input"),
    ("27 rows", "post", "/encode", {"json": {"images": [[[0.5] * 28] * 27]}}, 422, "invalid_input"),
    ("pixel above 1", "post", "/encode", {"json": {"images": [[1.5] * 784]}}, 422, "invalid_input"),
    ("pixel below 0", "post", "/reconstruct", {"json": {"images": [[-1.0] * 784]}}, 422, "invalid_input"),
    ("overflowing number", "post", "/encode", {"json": {"images": [[1e39] * 784]}}, 422, "invalid_input"),
    ("string pixels", "post", "/encode", {"json": {"images": [["x"] * 784]}}, 422, "invalid_input"),
    ("ragged images", "post", "/encode", {"json": {"images": [[0.5] * 784, [0.5]]}}, 422, "invalid_input"),
    ("no images key", "post", "/encode", {"json": {"image": ONE}}, 422, "invalid_input"),
    ("empty images", "post", "/encode", {"json": {"images": []}}, 422, "invalid_input"),
    ("bad base64", "post", "/encode", {"json": {"images": ["%%%"]}}, 422, "invalid_input"),
    ("not a png", "post", "/encode", {"json": {"images": ["aGVsbG8="]}}, 422, "invalid_input"),
    ("png 32x32", "post", "/encode", {"json": {"images": [png_b64(np.zeros((32, 32), np.uint8))]}}, 422,
     "invalid_input"),
    ("invalid json", "post", "/encode", {"content": b"{images", "headers": {"content-type": "application/json"}},
     422, "invalid_input"),
    ("json array body", "post", "/encode", {"json": [1, 2]}, 422, "invalid_input"),
    ("bad npy", "post", "/encode", {"content": b"\x93NUMPY garbage", "headers": NPY}, 422, "invalid_input"),
    ("npy int64", "post", "/encode", {"content": npy(np.zeros((1, 784), np.int64)), "headers": NPY}, 422,
     "invalid_input"),
    ("latent dim 3", "post", "/decode", {"json": {"latents": [[0.0, 0.0, 0.0]]}}, 422, "invalid_input"),
    ("latents npy dim 3", "post", "/decode", {"content": npy(np.zeros((2, 3), np.float32)), "headers": NPY}, 422,
     "invalid_input"),
    ("latent overflow", "post", "/decode", {"json": {"latents": [[1e39, 0.0]]}}, 422, "invalid_input"),
    ("n zero", "post", "/sample", {"json": {"n": 0}}, 422, "invalid_input"),
    ("n negative", "post", "/sample", {"json": {"n": -3}}, 422, "invalid_input"),
    ("n not int", "post", "/sample", {"json": {"n": "16"}}, 422, "invalid_input"),
    ("n too large", "post", "/sample", {"json": {"n": 65}}, 413, "payload_too_large"),
    # n beside count went unread and unchecked (schemathesis found {"count": 16, "n": {}} answered 200).
    ("count and n", "post", "/sample", {"json": {"count": 2, "n": {}}}, 422, "invalid_input"),
    ("seed negative", "post", "/sample", {"json": {"n": 1, "seed": -1}}, 422, "invalid_input"),
    ("seed float", "post", "/reconstruct", {"json": {"images": ONE, "sample": True, "seed": 1.5}}, 422,
     "invalid_input"),
    ("sample not bool", "post", "/reconstruct", {"json": {"images": ONE, "sample": "yes"}}, 422, "invalid_input"),
    ("too many images", "post", "/encode", {"json": {"images": ONE * 65}}, 413, "payload_too_large"),
    ("too many npy images", "post", "/encode", {"content": npy(np.zeros((65, 784), np.uint8)), "headers": NPY},
     413, "payload_too_large"),
    ("body over the limit", "post", "/encode", {"content": b"x" * 70_000, "headers": {"content-type":
     "application/json"}}, 413, "payload_too_large"),
    ("chunked body over the limit", "post", "/encode", {"content": _chunks()}, 413,
     "payload_too_large"),
    ("text/plain", "post", "/encode", {"content": b"hi", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ("form", "post", "/decode", {"data": {"a": "b"}}, 415, "unsupported_media_type"),
    ("npy to sample", "post", "/sample", {"content": npy(np.zeros(2)), "headers": NPY}, 415,
     "unsupported_media_type"),
    ("unknown model", "post", "/encode?model=gan", {"json": {"images": ONE}}, 404, "unknown_model"),
    ("path in model", "post", "/encode?model=../vae", {"json": {"images": ONE}}, 404, "unknown_model"),
    ("unknown version", "post", "/encode?model=vae&version=9", {"json": {"images": ONE}}, 404, "unknown_model"),
    ("version not int", "post", "/encode?version=latest", {"json": {"images": ONE}}, 422, "invalid_input"),
    ("version superscript", "post", "/encode?version=²", {"json": {"images": ONE}}, 422, "invalid_input"),
    ("version arabic digit", "post", "/encode?version=١", {"json": {"images": ONE}}, 422, "invalid_input"),
    ("version leading zero", "post", "/encode?version=01", {"json": {"images": ONE}}, 422, "invalid_input"),
    ("query seed superscript", "post", "/reconstruct?sample=true&seed=²",
     {"content": npy(np.zeros((1, 784), np.float32)), "headers": NPY}, 422, "invalid_input"),
    ("query seed arabic digit", "post", "/reconstruct?seed=١",
     {"content": npy(np.zeros((1, 784), np.float32)), "headers": NPY}, 422, "invalid_input"),
    ("unknown route", "get", "/nope", {}, 404, "not_found"),
    ("wrong method", "get", "/encode", {}, 405, "method_not_allowed"),
]


@pytest.fixture
async def small_client(artifacts_dir):
    async with serve(artifacts_dir, max_body_bytes=65_536) as c:
        yield c


@pytest.mark.parametrize("method, path, kwargs, status, kind", [r[1:] for r in BAD_REQUESTS],
                         ids=[r[0] for r in BAD_REQUESTS])
async def test_bad_request_gets_its_4xx_with_a_json_body(small_client, method, path, kwargs, status, kind):
    r = await getattr(small_client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["type"] == kind and isinstance(body["detail"], str) and body["detail"]
    ok = await small_client.post("/encode", json={"images": ONE})
    assert ok.status_code == 200


async def test_a_413_carries_the_limit_it_went_over_as_data(small_client):
    items = await small_client.post("/encode", content=npy(np.zeros((65, 784), np.uint8)), headers=NPY)
    assert items.json()["limit"] == {"name": "max_items_per_request", "value": 64, "got": 65}
    declared = await small_client.post("/encode", content=b"0" * 70_000, headers={"content-type": "application/json"})
    assert declared.json()["limit"] == {"name": "max_body_bytes", "value": 65_536, "got": 70_000}
    chunked = await small_client.post("/encode", content=_chunks())  # no Content-Length: the size is not known
    assert chunked.json()["limit"] == {"name": "max_body_bytes", "value": 65_536}
    assert "limit" not in (await small_client.post("/encode", json={"images": []})).json()  # other errors: none


async def test_a_kind_used_as_a_model_name_gets_a_404_that_names_the_model_serving_it(small_client):
    r = await small_client.post("/encode?model=ppca", json={"images": ONE})
    assert r.status_code == 404 and r.json()["type"] == "unknown_model"
    assert r.json()["detail"] == "model 'ppca' is not loaded; loaded models: ae, cvae, pca (kind ppca), vae"


async def _fill_encode_queue(client):
    """Holds one batch in the compute thread and fills vae/1's encode queue (bound 4) behind it."""
    gate = block(client)
    first = asyncio.create_task(client.post("/encode", json={"images": IMAGES.tolist()}))
    await until(lambda: client.app.state.service.activity.computing)
    queued = asyncio.create_task(client.post("/encode", json={"images": ONE * 4}))
    await until(lambda: client.app.state.service.registry.get("vae", 1).batchers["encode"].queued_items == 4)
    return gate, first, queued


async def test_full_queue_gets_503_with_retry_after_then_recovers(artifacts_dir):
    async with serve(artifacts_dir, max_queue_items=4) as client:
        gate, first, queued = await _fill_encode_queue(client)
        refused = await client.post("/encode", json={"images": ONE})
        assert refused.status_code == 503 and refused.json()["type"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        gate.set()
        assert (await first).status_code == 200 and (await queued).status_code == 200
        assert (await client.post("/encode", json={"images": ONE})).status_code == 200
        assert 'latentserve_rejections_total{reason="queue_full"} 1.0' in (await client.get("/metrics")).text


async def test_full_queue_refuses_before_reading_the_body(artifacts_dir):
    async with serve(artifacts_dir, max_queue_items=4) as client:
        gate, first, queued = await _fill_encode_queue(client)
        # Not even valid JSON: a 503 rather than a 422 shows the body was never parsed.
        refused = await client.post("/encode", content=b"{not json", headers={"content-type": "application/json"})
        assert refused.status_code == 503 and refused.json()["type"] == "overloaded"
        gate.set()
        assert (await first).status_code == 200 and (await queued).status_code == 200


async def test_large_request_is_withdrawn_when_its_client_hangs_up(artifacts_dir):
    class HungUp:
        async def receive(self):
            return {"type": "http.disconnect"}

    async with serve(artifacts_dir) as client:
        gate = block(client)
        first = asyncio.create_task(client.post("/encode", json={"images": ONE}))
        await until(lambda: client.app.state.service.activity.computing)
        batcher = client.app.state.service.registry.get("vae", 1).batchers["encode"]
        pendings = batcher.put(np.zeros((40, 784), np.float32))
        assert batcher.queued_items == 40
        with pytest.raises(ClientClosedRequest):
            await routes.result(HungUp(), batcher, pendings)
        assert batcher.queued_items == 0 and all(p.future.cancelled() for p in pendings)
        gate.set()
        assert (await first).status_code == 200


async def test_request_waiting_too_long_gets_504(artifacts_dir):
    async with serve(artifacts_dir, request_timeout_s=0.2) as client:
        gate = block(client)
        r = await client.post("/encode", json={"images": ONE})
        assert r.status_code == 504 and r.json()["type"] == "timeout"
        gate.set()
        assert (await client.post("/encode", json={"images": ONE})).status_code == 200


async def test_failing_batch_gives_500_internal_and_the_service_keeps_serving(client, caplog):
    batcher = client.app.state.service.registry.get("vae", 1).batchers["decode"]
    inner = batcher.fn

    def broken(parts):
        raise RuntimeError("CUDA fell over")

    batcher.fn = broken
    r = await client.post("/decode", json={"latents": [[0.0, 0.0]]})
    assert r.status_code == 500 and r.json() == {"detail": "internal", "type": "internal", "request_id": r.headers["x-request-id"]}
    assert sum("CUDA fell over" in (rec.exc_text or "") or rec.exc_info is not None for rec in caplog.records) == 1
    batcher.fn = inner
    assert (await client.post("/decode", json={"latents": [[0.0, 0.0]]})).status_code == 200
    assert (await client.post("/encode", json={"images": ONE})).status_code == 200


async def test_a_pixel_out_of_range_is_shown_exactly(client):
    r = await client.post("/encode", json={"images": [[1.0000001] + [0.5] * 783]})
    assert r.status_code == 422 and "got values in [0.5, 1.0000001]" in r.json()["detail"]
