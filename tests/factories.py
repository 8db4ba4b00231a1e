"""Tiny artifacts for the service's tests, written with lvm.write_artifact: a PPCA with a random orthonormal W and
AE/VAE/CVAE networks with random weights and small hidden widths; the AE and the VAE carry a class density (ten
Gaussians at spread-out means), the PPCA none. Built once per test session, in a temporary folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import lvm
from lvm.classes import write_classes
from lvm.density import ClassDensity
from lvm.embedding import compute_embedding, write_embedding
from lvm.networks import CVAE, INPUT_DIM, MLPModel, PPCA
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


def mlp(kind: str, seed: int = 0) -> MLPModel | CVAE:
    torch.manual_seed(seed)
    return CVAE(LATENT_DIM, HIDDEN) if kind == "cvae" else MLPModel(kind, LATENT_DIM, HIDDEN)


def class_density(seed: int = 0, components: int = 1) -> ClassDensity:
    """Each digit d: `components` Gaussians of sd 0.3 around a mean on a circle of radius 2 (angle 36° d)."""
    angle = torch.arange(10.0) * (2 * torch.pi / 10)
    centre = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1)  # (10, 2)
    offsets = 0.2 * torch.randn(10, components, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
    tril = 0.3 * torch.eye(LATENT_DIM).expand(10, components, LATENT_DIM, LATENT_DIM)
    return ClassDensity(torch.full((10, components), 1.0 / components), centre[:, None] + offsets, tril)


def write(root: Path, name: str, kind: str, seed: int = 0, embedding: int = 0, classes: bool = False,
          reference: int = 0) -> Path:
    """Writes the next version of `name` (a random model of `kind`) under root and returns its folder; with
    `embedding` > 0, an embedding of that many of `embedding_images` goes with it, with `classes` a class density,
    with `reference` > 0 a score reference of that many (10 importance samples each)."""
    model = ppca(seed) if kind == "ppca" else mlp(kind, seed)

    def extras(folder: Path) -> None:
        if embedding:
            write_embedding(folder, compute_embedding(model, *embedding_images(embedding)))
        if reference:
            write_reference(folder, compute_reference(model, embedding_images(reference)[0], "random images",
                                                      samples=10))
        if classes:
            write_classes(folder, class_density(seed), "tests: fixed Gaussians")

    return lvm.write_artifact(root, name, model, manifest(), extras if embedding or classes or reference else None)


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
    """pca/1, ae/1, vae/1 and cvae/1, as the committed artifacts are named (the AE and the VAE with a class density)."""
    write(root, "pca", "ppca")
    write(root, "ae", "ae", classes=True)
    write(root, "vae", "vae", classes=True)
    write(root, "cvae", "cvae")
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
