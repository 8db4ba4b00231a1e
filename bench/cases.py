"""The soak's request mix: valid requests over every endpoint, model and body format, and one malformed request of
every kind the service rejects, each with the status it must get (issue 3's error table, issue 17's hostile tensors)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from bench.bodies import OIP_ENCODE, hostile_shape, hostile_strings, mnist_test_images, npy_bytes

J, NPY, PNG = "application/json", "application/x-npy", "image/png"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # with the query string
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    auth: bool = True  # send the API key (when the run has one)

    @property
    def valid(self) -> bool:
        return self.expect < 400


def _png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _post(name, path, obj=None, raw=None, ctype=J, accept=None, expect=200, auth=True) -> Case:
    body = raw if raw is not None else json.dumps(obj).encode()
    headers = {"Content-Type": ctype} | ({"Accept": accept} if accept else {})
    return Case(name, "POST", path, body, headers, expect, auth)


def valid_cases(models: dict[str, int]) -> list[Case]:
    """models: name -> latent dim. Every endpoint, every input and output format, for every model."""
    images, _ = mnist_test_images(64)
    x = images.reshape(64, 784).astype(np.float32) / 255
    cases = [Case("get-models", "GET", "/models"), Case("healthz", "GET", "/healthz", auth=False)]
    for m, k in models.items():
        z = np.random.default_rng(0).standard_normal((64, k)).astype(np.float32)
        q = f"?model={m}"
        cases += [
            Case(f"get-model-{m}", "GET", f"/models/{m}"),
            _post(f"encode-json-{m}", "/encode" + q, {"images": [x[0].tolist()]}),
            _post(f"encode-rows-{m}", "/encode" + q, {"images": images[:2].astype(np.float32).__truediv__(255).tolist()}),
            _post(f"encode-png-{m}", "/encode" + q, {"images": [_png_b64(images[2])]}),
            _post(f"encode-npy-u8-{m}", "/encode" + q, raw=npy_bytes(images), ctype=NPY),
            _post(f"encode-npy-f32-{m}", "/encode" + q, raw=npy_bytes(x[:8]), ctype=NPY),
            _post(f"decode-json-{m}", "/decode" + q, {"latents": z[:4].tolist()}),
            _post(f"decode-npy-{m}", "/decode" + q, raw=npy_bytes(z), ctype=NPY, accept=NPY),
            _post(f"decode-png-{m}", "/decode" + q, {"latents": z[:9].tolist()}, accept=PNG),
            _post(f"reconstruct-{m}", "/reconstruct" + q, {"images": [x[3].tolist()], "sample": False}),
            _post(f"reconstruct-sample-{m}", "/reconstruct" + q, {"images": [x[4].tolist()], "sample": True, "seed": 7}),
            _post(f"sample-json-{m}", "/sample" + q, {"n": 4, "seed": 1}),
            _post(f"sample-npy-{m}", "/sample" + q, {"n": 16}, accept=NPY),
            _post(f"sample-png-{m}", "/sample" + q, {"n": 9, "seed": 3}, accept=PNG),
        ]
    return cases


def malformed_cases(latent_dim: int, max_body_bytes: int, max_items: int) -> list[Case]:
    """One request of each rejected kind, against the default model."""
    images, _ = mnist_test_images(4)
    pixels = (images[0].reshape(784) / 255).tolist()
    big = np.zeros((max_items + 1, 28, 28), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
    png32 = base64.b64encode(buf.getvalue()).decode()
    nan_latents = np.full((2, latent_dim), np.nan, np.float32)
    return [
        _post("bad-783-pixels", "/encode", {"images": [pixels[:783]]}, expect=422),
        _post("bad-pixel-range", "/encode", {"images": [[1.5] + pixels[1:]]}, expect=422),
        _post("bad-non-finite-json", "/encode", raw=b'{"images": [[1e999' + b", 0.0" * 783 + b"]]}", expect=422),
        _post("bad-nan-npy", "/encode", raw=npy_bytes(np.full((1, 784), np.nan, np.float32)), ctype=NPY, expect=422),
        _post("bad-json-syntax", "/encode", raw=b'{"images": [[0.0, ', expect=422),
        _post("bad-json-not-object", "/encode", [1, 2, 3], expect=422),
        _post("bad-missing-field", "/encode", {"pictures": [pixels]}, expect=422),
        _post("bad-ragged-rows", "/encode", {"images": [[[0.0] * 28] * 27 + [[0.0] * 27]]}, expect=422),
        _post("bad-base64", "/encode", {"images": ["not base64 !!"]}, expect=422),
        _post("bad-png-bytes", "/encode", {"images": [base64.b64encode(b"GIF89a nonsense").decode()]}, expect=422),
        _post("bad-png-size", "/encode", {"images": [png32]}, expect=422),
        _post("bad-npy-bytes", "/encode", raw=b"\x93NUMPY garbage", ctype=NPY, expect=422),
        _post("bad-npy-dtype", "/encode", raw=npy_bytes(np.zeros((2, 784), np.int64)), ctype=NPY, expect=422),
        _post("bad-npy-shape", "/encode", raw=npy_bytes(np.zeros((2, 10), np.float32)), ctype=NPY, expect=422),
        _post("bad-latent-dim", "/decode", {"latents": [[0.0] * (latent_dim + 1)]}, expect=422),
        _post("bad-latent-nan", "/decode", raw=npy_bytes(nan_latents), ctype=NPY, expect=422),
        _post("bad-sample-n0", "/sample", {"n": 0}, expect=422),
        _post("bad-sample-too-many", "/sample", {"n": max_items + 1}, expect=413),
        _post("bad-too-many-images", "/encode", raw=npy_bytes(big), ctype=NPY, expect=413),
        _post("bad-body-too-large", "/decode", raw=b" " * (max_body_bytes + 1), expect=413),
        _post("bad-content-type", "/encode", raw=b"images=1", ctype="text/plain", expect=415),
        _post("bad-unknown-model", "/encode?model=nosuchmodel", {"images": [pixels]}, expect=404),
        _post("bad-unknown-version", "/encode?model=vae&version=9999", {"images": [pixels]}, expect=404),
        _post("bad-no-api-key", "/encode", {"images": [pixels]}, expect=401, auth=False),
        Case("bad-wrong-api-key", "POST", "/encode", json.dumps({"images": [pixels]}).encode(),
             {"Content-Type": J, "Authorization": "Bearer wrong-key"}, 401, auth=False),
        Case("bad-unknown-endpoint", "GET", "/nosuchendpoint", expect=404),
        Case("bad-method", "GET", "/encode", expect=405),
        # Issue 17's probes: each must be refused at once, without stalling the others or costing memory.
        _v2("bad-v2-shape-50000-dims", *hostile_shape(50_000, 2**63 - 1)),
        _v2("bad-v2-shape-50000-dims-binary", *hostile_shape(50_000, 2**63 - 1, binary=True)),
        _v2("bad-v2-uint8-strings", *hostile_strings(500_000, 1_000)),
    ]


def _v2(name: str, body: bytes, headers: dict[str, str]) -> Case:
    return Case(name, "POST", OIP_ENCODE, body, headers, 422)
