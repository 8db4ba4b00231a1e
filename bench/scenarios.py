"""The benchmark's scenarios: what each sends, how many images a request carries, and what it is compared with."""

from __future__ import annotations

import io
import json
import urllib.request
from dataclasses import dataclass

import numpy as np

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
    reference: str  # "floor:<floor scenario>" or "inprocess:<encode|decode>:<batch>"


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
]
# The framework floor (bench/floor.py) with the same JSON bodies as the single-item scenarios.
FLOORS = [
    Scenario("floor-image", "floor: FastAPI + orjson, 5.7 kB image body", "/encode", "image_json", JSON, None, 1,
             "self"),
    Scenario("floor-latent", "floor: FastAPI + orjson, latent body", "/decode", "latent_json", JSON, None, 1, "self"),
]
BY_NAME = {s.name: s for s in SCENARIOS + FLOORS}


def probe(base_url: str, scenario: Scenario, body: bytes, auth: str | None = None) -> str:
    """Sends one request and checks the answer's shape; returns a short description, raises on anything wrong."""
    headers = {"Content-Type": scenario.content_type}
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
    reply = json.loads(data)
    key = "mean" if scenario.path == "/encode" else "images"
    rows = reply.get(key)
    if not isinstance(rows, list) or len(rows) != scenario.items or "model" not in reply or "version" not in reply:
        raise AssertionError(f"{scenario.name}: unexpected reply keys {sorted(reply)}")
    return f"{reply['model']} v{reply['version']}, {key} {len(rows)}x{len(rows[0])}"
