"""The class-conditional latent density of an artifact (lvm.density.ClassDensity): write, read, verify.

    <root>/<name>/<version>/classes.safetensors
        weight      float32 (10, M)        each digit's mixture weights
        loc         float32 (10, M, K)     component means
        scale_tril  float32 (10, M, K, K)  Cholesky factors of the component covariances
        metadata: {"fitted_to": "..."} (one key: safetensors orders several at random, and the bytes with them)

Fitted after training to the posterior means of the training images (training/classes.py); the manifest lists the file
with its SHA-256 in `files` like every other file and says how it was fitted in `class_density`. An artifact without
it still serves; it just cannot draw a given digit. No pickle: safetensors only.
"""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch

from lvm.artifact import ArtifactError, listed_file
from lvm.density import LABELS, ClassDensity

CLASSES_FILE = "classes.safetensors"
MAX_COMPONENTS = 16


def write_classes(folder: Path, density: ClassDensity, fitted_to: str) -> Path:
    """Writes folder/classes.safetensors (call it from write_artifact's write_extras) and returns its path."""
    tensors = {name: getattr(density, name).detach().float().cpu().contiguous()
               for name in ("weight", "loc", "scale_tril")}
    path = Path(folder) / CLASSES_FILE
    safetensors.torch.save_file(tensors, path, metadata={"fitted_to": fitted_to})
    return path


def has_classes(manifest: dict) -> bool:
    return CLASSES_FILE in manifest.get("files", {})


def read_classes(path: Path, manifest: dict) -> ClassDensity:
    """Reads the density of the artifact at path, checking its SHA-256 against the manifest and its shapes against
    latent_dim; raises ArtifactError when it is absent, altered or malformed."""
    path = Path(path)
    file = listed_file(path, manifest, CLASSES_FILE)
    try:
        tensors = safetensors.torch.load_file(file, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ArtifactError(f"{path}: {CLASSES_FILE} cannot be read ({exc})") from None
    weight, loc, tril = tensors.get("weight"), tensors.get("loc"), tensors.get("scale_tril")
    k = manifest["latent_dim"]
    if weight is None or loc is None or tril is None or loc.ndim != 3 or loc.shape[0] != LABELS \
            or loc.shape[2] != k or not 1 <= loc.shape[1] <= MAX_COMPONENTS:
        raise ArtifactError(f"{path}: {CLASSES_FILE} must hold weight ({LABELS}, M), loc ({LABELS}, M, {k}) and "
                            f"scale_tril ({LABELS}, M, {k}, {k}) with M in [1, {MAX_COMPONENTS}]")
    values = torch.cat([weight.reshape(-1), loc.reshape(-1), tril.reshape(-1)])
    diagonal = tril.diagonal(dim1=-2, dim2=-1) if tril.ndim == 4 else None
    if not bool(torch.isfinite(values).all()) or bool((weight < 0).any()) \
            or not torch.allclose(weight.sum(-1), torch.ones(LABELS), atol=1e-4) \
            or diagonal is None or not bool((diagonal > 0).all()):
        raise ArtifactError(f"{path}: {CLASSES_FILE} holds non-finite values, weights that are not distributions or "
                            "a scale_tril whose diagonal is not positive")
    try:
        return ClassDensity(weight, loc, torch.tril(tril))
    except ValueError as exc:
        raise ArtifactError(f"{path}: {CLASSES_FILE}: {exc}") from None
