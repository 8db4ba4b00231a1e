"""The benchmark's scenarios: what each sends, how many images a request carries, and what it is compared with."""

from __future__ import annotations

import io
import json
import urllib.request
from dataclasses import dataclass

import numpy as np

from bench.bodies import OIP_ENCODE, infer_binary_header

NPY = "application/x-npy"
JSON = "application/json"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    body: str  # a key of bench.bodies.prepare()
    content_type: str
    accept: str | None
    items: int  # images (or latents) per request
    reference: str  # "floor:<floor scenario>", "inprocess:<encode|decode>:<batch>" or "scenario:<scenario>"
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request


SCENARIOS = [
    Scenario("encode-json", "single-image JSON /encode", "/encode", "image_json", JSON, None, 1,
             "floor:floor-image"),
    Scenario("decode-json", "single-latent JSON /decode", "/decode", "latent_json", JSON, None, 1,
             "floor:floor-latent"),
    Scenario("sample-npy", "/sample n=16, Accept .npy", "/sample", "sample16_json", JSON, NPY, 16,
             "inprocess:decode:16"),
    Scenario("encode-npy-1024", "bulk /encode, 1,024 uint8 images .npy", "/encode", "images1024_npy", NPY, None,
             1024, "inprocess:encode:1024"),
    Scenario("decode-npy-1024", "bulk /decode, 1,024 latents .npy in and out", "/decode", "latents1024_npy", NPY,
             NPY, 1024, "inprocess:decode:1024"),
    # The Open Inference Protocol (service/oip.py), each against the service's own route doing the same work.
    Scenario("infer-json", "single-image JSON /v2 infer (vae-encode)", OIP_ENCODE, "infer_image_json", JSON, None, 1,
             "scenario:encode-json"),
    Scenario("infer-binary-1024", "bulk /v2 infer, 1,024 uint8 images, binary tensors in and out", OIP_ENCODE,
             "infer_images1024_binary", "application/octet-stream", None, 1024, "scenario:encode-npy-1024",
             (("Inference-Header-Content-Length", str(len(infer_binary_header()))),)),
]
# The framework floor (bench/floor.py) with the same JSON bodies as the single-item scenarios.
FLOORS = [
    Scenario("floor-image", "floor: FastAPI + orjson, 5.7 kB image body", "/encode", "image_json", JSON, None, 1,
             "self"),
    Scenario("floor-latent", "floor: FastAPI + orjson, latent body", "/decode", "latent_json", JSON, None, 1, "self"),
]
BY_NAME = {s.name: s for s in SCENARIOS + FLOORS}


@dataclass(frozen=True)
class Pair:
    """A protocol scenario and the own-route scenario it must keep up with, measured in alternating rounds on one
    server (bench.run._paired_protocol), at a concurrency of its own, against a floor on the ratio of images/s."""

    scenario: str
    reference: str
    concurrency: int
    target: float


PAIRS = [Pair("infer-json", "encode-json", 64, 0.85), Pair("infer-binary-1024", "encode-npy-1024", 4, 0.90)]


def probe(base_url: str, scenario: Scenario, body: bytes, auth: str | None = None) -> str:
    """Sends one request and checks the answer's shape; returns a short description, raises on anything wrong."""
    headers = {"Content-Type": scenario.content_type, **dict(scenario.headers)}
    if scenario.accept:
        headers["Accept"] = scenario.accept
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    request = urllib.request.Request(base_url + scenario.path, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        status, content_type, data = r.status, r.headers.get("Content-Type", ""), r.read()
    if status != 200:
        raise AssertionError(f"{scenario.name}: status {status}")
    if scenario.reference == "self":
        return "constant"
    if scenario.accept == NPY:
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.shape[0] != scenario.items or array.dtype != np.float32 or not np.isfinite(array).all():
            raise AssertionError(f"{scenario.name}: got {array.dtype} {array.shape}")
        return f"{content_type.split(';')[0]} {array.dtype} {tuple(array.shape)}"
    if scenario.path.startswith("/v2/"):
        return _probe_protocol(scenario, data, r.headers.get("Inference-Header-Content-Length"))
    reply = json.loads(data)
    key = "mean" if scenario.path == "/encode" else "images"
    rows = reply.get(key)
    if not isinstance(rows, list) or len(rows) != scenario.items or "model" not in reply or "version" not in reply:
        raise AssertionError(f"{scenario.name}: unexpected reply keys {sorted(reply)}")
    return f"{reply['model']} v{reply['version']}, {key} {len(rows)}x{len(rows[0])}"


def _probe_protocol(scenario: Scenario, data: bytes, header_length: str | None) -> str:
    """An inference reply's `mean` output, JSON or binary, must have one row per image."""
    reply = json.loads(data if header_length is None else data[:int(header_length)])
    mean = next((o for o in reply.get("outputs", []) if o["name"] == "mean"), None)
    if mean is None or mean["shape"][0] != scenario.items or mean["datatype"] != "FP32":
        raise AssertionError(f"{scenario.name}: unexpected reply {str(reply)[:200]}")
    how = "binary" if "parameters" in mean else "JSON"
    return f"{reply['model_name']} v{reply['model_version']}, mean {mean['shape'][0]}x{mean['shape'][1]} {how}"
