"""Tiny artifacts for the service's tests, written with lvm.write_artifact: a PPCA with a random orthonormal W and
AE/VAE networks with random weights and small hidden widths. Built once per test session, in a temporary folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import lvm
from lvm.embedding import compute_embedding, write_embedding
from lvm.networks import INPUT_DIM, MLPModel, PPCA
from lvm.reference import compute_reference, write_reference

LATENT_DIM = 2
HIDDEN = [32, 16]


def manifest() -> dict:
    """The manifest entries write_artifact asks of its caller (the model describes itself)."""
    return {
        "training": {"note": "random weights for tests"},
        "data": {"dataset": "none"},
        "metrics": {},
        "software": {"torch": torch.__version__},
    }


def ppca(seed: int = 0) -> PPCA:
    g = torch.Generator().manual_seed(seed)
    W, _ = torch.linalg.qr(torch.randn(INPUT_DIM, LATENT_DIM, generator=g))  # orthonormal columns
    mu = torch.rand(INPUT_DIM, generator=g) * 0.5
    return PPCA(W * 3.0, mu, torch.tensor(0.05))


def mlp(kind: str, seed: int = 0) -> MLPModel:
    torch.manual_seed(seed)
    return MLPModel(kind, LATENT_DIM, HIDDEN)


def write(root: Path, name: str, kind: str, seed: int = 0, embedding: int = 0, reference: int = 0) -> Path:
    """Writes the next version of `name` (a random model of `kind`) under root and returns its folder; with
    `embedding` > 0, an embedding of that many of `embedding_images` goes with it, with `reference` > 0 a score
    reference of that many (10 importance samples each)."""
    model = ppca(seed) if kind == "ppca" else mlp(kind, seed)

    def extras(folder: Path) -> None:
        if embedding:
            write_embedding(folder, compute_embedding(model, *embedding_images(embedding)))
        if reference:
            write_reference(folder, compute_reference(model, embedding_images(reference)[0], "random images",
                                                      samples=10))

    return lvm.write_artifact(root, name, model, manifest(), extras if embedding or reference else None)


def copy_as_version(version_dir: Path, target: Path, version: int) -> Path:
    """The files of version_dir copied to target with the manifest renumbered to `version` (the weights and their
    SHA-256 unchanged): a new valid version in milliseconds, for tests that move folders around."""
    shutil.copytree(version_dir, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    return target


def embedding_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images (n, 784) in [0, 1] and their labels 0, 1, ..., 9, 0, ... for test embeddings."""
    return torch.rand(n, INPUT_DIM, generator=torch.Generator().manual_seed(n)), torch.arange(n) % 10


def write_defaults(root: Path) -> Path:
    """pca/1, ae/1 and vae/1, as the committed artifacts are named."""
    write(root, "pca", "ppca")
    write(root, "ae", "ae")
    write(root, "vae", "vae")
    return root


@pytest.fixture(scope="session")
def artifacts_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_defaults(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def artifacts_dir(artifacts_template: Path, tmp_path: Path) -> Path:
    """A private copy of the session's artifacts that a test may change (reload tests add and break versions)."""
    target = tmp_path / "artifacts"
    shutil.copytree(artifacts_template, target)
    return target
