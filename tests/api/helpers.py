"""Inputs and in-process references shared by the API tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

import lvm

RNG = np.random.default_rng(1)
IMAGES_U8 = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
IMAGES = IMAGES_U8.reshape(3, 784).astype(np.float32) / 255


def png_b64(array: np.ndarray, rgb: bool = False) -> str:
    img = Image.fromarray(array)
    buf = io.BytesIO()
    (img.convert("RGB") if rgb else img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def reference(artifacts_dir, name: str, version: int = 1) -> lvm.LatentModel:
    """The same artifact built in-process, to compare the service's answers with."""
    return lvm.load_artifact(artifacts_dir / name / str(version)).build()


def run(fn, *args):
    with torch.inference_mode():
        return fn(*(torch.as_tensor(a) for a in args))
