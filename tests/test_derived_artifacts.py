"""The committed version 2s: derived from the version 1s with the same weights and metrics, and their embedding is the
real MNIST test set encoded by that model (the last check needs MNIST_DIR; CI sets it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import lvm
from lvm.embedding import read_embedding
from training.data import load_mnist

pytestmark = [pytest.mark.mnist, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
MNIST_DIR = os.environ.get("MNIST_DIR")
NAMES = ("pca", "ae", "vae")


@pytest.mark.parametrize("name", NAMES)
def test_version_2_is_version_1_with_an_embedding(name):
    v1, v2 = (lvm.load_artifact(ARTIFACTS / name / str(v)) for v in (1, 2))
    assert v2.manifest["derived_from"]["version"] == 1
    assert v2.manifest["files"]["weights.safetensors"] == v1.manifest["files"]["weights.safetensors"]
    assert v2.manifest["metrics"] == v1.manifest["metrics"]
    embedding = read_embedding(v2.path, v2.manifest)
    assert embedding.mean.shape == (10000, 2)
    assert (embedding.scale is None) == (name == "ae")
    assert np.bincount(embedding.label).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not MNIST_DIR, reason="MNIST_DIR is not set")
@pytest.mark.parametrize("name", NAMES)
def test_embedding_is_the_test_set_encoded(name):
    artifact = lvm.load_artifact(ARTIFACTS / name / "2")
    embedding = read_embedding(artifact.path, artifact.manifest)
    test = load_mnist(Path(MNIST_DIR)).test
    z_loc, z_scale = artifact.build().encode(test.x)
    np.testing.assert_allclose(embedding.mean, z_loc.numpy(), rtol=1e-4, atol=1e-5)
    if z_scale is not None:
        np.testing.assert_allclose(embedding.scale, z_scale.numpy(), rtol=1e-4, atol=1e-6)
    assert embedding.label.tolist() == test.y.tolist()
