"""Request bodies, prepared once per run into files the Lua scripts read: real MNIST test digits when the files are
at hand ($MNIST_DIR or ../shared/mnist), otherwise synthetic digits with MNIST's sparsity, from a fixed seed."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import orjson

from bench.server import REPO

N_BULK = 1024
OIP_ENCODE = "/v2/models/vae-encode/infer"


def infer_binary_header(n: int = N_BULK) -> bytes:
    """The JSON header of a protocol request carrying n uint8 28x28 images as binary, outputs asked for in binary
    (what tritonclient sends by default); its length goes in the Inference-Header-Content-Length header."""
    return orjson.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [n, 28, 28],
                                     "parameters": {"binary_data_size": n * 784}}],
                         "parameters": {"binary_data_output": True}})


def hostile_shape(dims: int, size: int, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """A protocol encode request (body, headers) whose images tensor declares `dims` dimensions of `size` each (issue
    17, item 1: unbounded, [2^63-1] x 50,000 held the event loop for seconds)."""
    item = {"name": "images", "datatype": "UINT8", "shape": [size] * dims}
    item.update({"parameters": {"binary_data_size": 784}} if binary else {"data": [0] * 784})
    header = orjson.dumps({"inputs": [item]})
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + bytes(784), {"Content-Type": "application/octet-stream",
                                 "Inference-Header-Content-Length": str(len(header))}


def hostile_strings(n: int, width: int) -> tuple[bytes, dict[str, str]]:
    """A protocol encode request (body, headers) whose UINT8 images hold n empty strings and one of `width`
    characters (issue 17, item 2: inferred as a fixed-width string array, that takes n x width x 4 bytes)."""
    data = [""] * n + ["x" * width]
    body = orjson.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [len(data)], "data": data}]})
    return body, {"Content-Type": "application/json"}


def mnist_test_images(n: int) -> tuple[np.ndarray, str]:
    """(n, 28, 28) uint8 and where they came from."""
    for folder in (os.environ.get("MNIST_DIR"), REPO.parent / "shared" / "mnist"):
        if not folder:
            continue
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
            path = Path(folder) / name
            if path.is_file():
                raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
                return np.frombuffer(raw, np.uint8, offset=16)[: n * 784].reshape(n, 28, 28).copy(), f"MNIST test set ({name})"
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.uint8)
    # A blob of strokes in the centre, about 19% of pixels lit, as in MNIST.
    mask = rng.random((n, 20, 20)) < 0.33
    images[:, 4:24, 4:24] = np.where(mask, rng.integers(1, 256, (n, 20, 20)), 0)
    return images, "synthetic digits (no MNIST files found)"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def prepare(folder: Path, latent_dim: int = 2) -> dict[str, Path]:
    """Writes every body the scenarios use; returns name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = mnist_test_images(N_BULK)
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((N_BULK, latent_dim)).astype(np.float32)
    # float32 -> Python float through json.dumps, as a Python client holding x / 255 in float32 would send it:
    # 5.7 kB for the first test digit, the body of the reference figures.
    first = (images[0].reshape(784).astype(np.float32) / 255).tolist()
    bodies = {
        "image_json": json.dumps({"images": [first]}).encode(),
        # The same digit as a protocol tensor, its floats written the same way.
        "infer_image_json": json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784],
                                                    "data": first}]}).encode(),
        "infer_images1024_binary": infer_binary_header() + images.tobytes(),
        "latent_json": orjson.dumps({"latents": [latents[0].tolist()]}),
        "sample16_json": orjson.dumps({"n": 16}),
        "images1024_npy": npy_bytes(images),
        "latents1024_npy": npy_bytes(latents),
        "images1024_json_max": max_json_body(),
    }
    paths = {}
    for name, data in bodies.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def max_json_body(n: int = N_BULK) -> bytes:
    """n images of 784 float32 pixels in (0, 1], each written in full by json.dumps: ~15 MiB for 1,024, the largest
    JSON body the default limits accept (the bulk-memory figures of issue 9)."""
    pixels = (np.random.default_rng(2).integers(1, 256, (n, 784)).astype(np.float32) / 255).tolist()
    return json.dumps({"images": pixels}).encode()


def source() -> str:
    return mnist_test_images(1)[1]
