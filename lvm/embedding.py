"""The test set in latent space, stored in an artifact for the explorer page: write, compute and read.

    <root>/<name>/<version>/embedding.safetensors
        mean   float32 (N, K)  posterior means E[z|x] of the test images, in test-set order
        scale  float32 (N, K)  posterior standard deviations; absent for models without one (the AE)
        label  uint8   (N,)    the digit of each image, 0-9
        metadata: {"images": "mnist test set"} (one key: safetensors orders several at random, and the bytes with them)

The file is listed with its SHA-256 in the manifest's `files` like every other file; an artifact without it still
serves (the embedding is optional). No pickle: safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from torch import Tensor

from lvm.artifact import ArtifactError, listed_file
from lvm.networks import LatentModel

EMBEDDING_FILE = "embedding.safetensors"
LABELS = 10
_ENCODE_BATCH = 1000


@dataclass(frozen=True)
class Embedding:
    mean: np.ndarray  # (N, K) float32
    scale: np.ndarray | None  # (N, K) float32, or None
    label: np.ndarray  # (N,) uint8

    def to_json(self) -> dict:
        """The JSON body of the service's embedding route: lists of rows, scale null when there is none."""
        n, k = self.mean.shape
        return {"count": n, "latent_dim": k, "mean": self.mean, "scale": self.scale, "label": self.label}


def compute_embedding(model: LatentModel, x: Tensor, y: Tensor) -> Embedding:
    """Encodes the images x (N, 784) in batches; y (N,) are their digits, which a conditional model is given (its
    q(z | x, y): the style of each digit, with the digit itself left to the label)."""
    means, scales = [], []
    with torch.no_grad():
        for start in range(0, len(x), _ENCODE_BATCH):
            z_loc, z_scale = model.encode(x[start:start + _ENCODE_BATCH], y[start:start + _ENCODE_BATCH])
            means.append(z_loc)
            if z_scale is not None:
                scales.append(z_scale)
    mean = torch.cat(means).float().numpy()
    scale = torch.cat(scales).float().numpy() if scales else None
    return Embedding(mean, scale, y.numpy().astype(np.uint8))


def write_embedding(folder: Path, embedding: Embedding, images: str = "mnist test set") -> Path:
    """Writes folder/embedding.safetensors (call it from write_artifact's write_extras) and returns its path."""
    tensors = {"mean": np.ascontiguousarray(embedding.mean, np.float32),
               "label": np.ascontiguousarray(embedding.label, np.uint8)}
    if embedding.scale is not None:
        tensors["scale"] = np.ascontiguousarray(embedding.scale, np.float32)
    path = Path(folder) / EMBEDDING_FILE
    safetensors.numpy.save_file(tensors, path, metadata={"images": images})
    return path


def has_embedding(manifest: dict) -> bool:
    return EMBEDDING_FILE in manifest.get("files", {})


def read_embedding(path: Path, manifest: dict) -> Embedding:
    """Reads the embedding of the artifact at path, checking its SHA-256 against the manifest and its shapes against
    latent_dim; raises ArtifactError when it is absent or does not fit."""
    path = Path(path)
    file = listed_file(path, manifest, EMBEDDING_FILE)
    try:
        tensors = safetensors.numpy.load_file(file)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ArtifactError(f"{path}: {EMBEDDING_FILE} cannot be read ({exc})") from None
    mean, scale, label = tensors.get("mean"), tensors.get("scale"), tensors.get("label")
    k = manifest["latent_dim"]
    if mean is None or label is None or mean.ndim != 2 or mean.shape[1] != k or label.shape != (len(mean),):
        raise ArtifactError(f"{path}: {EMBEDDING_FILE} must hold mean (N, {k}) and label (N,)")
    if scale is not None and scale.shape != mean.shape:
        raise ArtifactError(f"{path}: {EMBEDDING_FILE} has scale {scale.shape}, mean {mean.shape}")
    if label.dtype != np.uint8 or (len(label) and label.max() >= LABELS):
        raise ArtifactError(f"{path}: {EMBEDDING_FILE} labels must be uint8 digits 0-9")
    return Embedding(mean.astype(np.float32), None if scale is None else scale.astype(np.float32), label)
