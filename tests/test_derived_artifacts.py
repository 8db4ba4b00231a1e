"""The committed version 2s: derived from the version 1s with the same weights and metrics, and their embedding is the
real MNIST test set encoded by that model; the version 3s add the score reference, the validation split scored; cvae/2
adds to cvae/1 the density of its codes per digit and a reference (the checks against the data need MNIST_DIR; CI sets
it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lvm
from lvm.embedding import read_embedding
from lvm.reference import read_reference
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


@pytest.mark.parametrize("name", NAMES)
def test_version_3_is_version_2_with_a_score_reference(name):
    v2, v3 = (lvm.load_artifact(ARTIFACTS / name / str(v)) for v in (2, 3))
    assert v3.manifest["derived_from"]["version"] == 2 and v3.manifest["metrics"] == v2.manifest["metrics"]
    # The same tensors (the header's metadata changed format since version 2, so the file's bytes differ).
    assert v3.tensors.keys() == v2.tensors.keys()
    assert all(torch.equal(v3.tensors[k], v2.tensors[k]) for k in v2.tensors)
    reference = read_reference(v3.path, v3.manifest)
    assert reference.info["count"] == 5000 and reference.info["method"] == "tails"
    assert reference.info["samples"] == 100 and reference.info["false_positive_rate"] == 0.01


@pytest.mark.skipif(not MNIST_DIR, reason="MNIST_DIR is not set")
@pytest.mark.parametrize("name", NAMES)
def test_reference_is_the_validation_split_scored(name):
    artifact = lvm.load_artifact(ARTIFACTS / name / "3")
    reference = read_reference(artifact.path, artifact.manifest)
    model, n = artifact.build(), 100
    # The noise of the first n images, drawn as compute_terms draws it: one generator, 500 images at a time.
    g = torch.Generator().manual_seed(reference.info["seed"])
    eps = torch.randn(500, reference.info["samples"], model.latent_dim, generator=g)[:n]
    with torch.no_grad():
        terms = model.score_terms(load_mnist(Path(MNIST_DIR)).valid.x[:n], eps)
    for key, value in terms.items():
        np.testing.assert_allclose(reference.features[key][:n], value.numpy(), rtol=1e-5, atol=1e-3, err_msg=key)


def test_cvae_version_2_is_version_1_with_its_codes_density_per_digit_and_a_score_reference():
    v1, v2 = (lvm.load_artifact(ARTIFACTS / "cvae" / str(v)) for v in (1, 2))
    assert v2.manifest["derived_from"]["version"] == 1 and v2.manifest["derived_from"]["steps"] == ["classes",
                                                                                                    "reference"]
    assert v2.manifest["files"]["weights.safetensors"] == v1.manifest["files"]["weights.safetensors"]
    assert v1.build().class_density is None
    model = v2.build()
    assert model.digit_density() is model.class_density
    assert model.class_density.components == v2.manifest["class_density"]["components"]
    assert read_reference(v2.path, v2.manifest).info["count"] == 5000


@pytest.mark.skipif(not MNIST_DIR, reason="MNIST_DIR is not set")
def test_the_cvae_density_is_fitted_to_the_codes_of_each_digits_training_images_given_the_digit():
    model = lvm.load_artifact(ARTIFACTS / "cvae" / "2").build()
    train = load_mnist(Path(MNIST_DIR)).train
    density = model.class_density
    for digit in (1, 7):
        x = train.x[train.y == digit]
        with torch.no_grad():
            codes = model.encode(x, torch.full((len(x),), digit))[0]
        # A maximum-likelihood mixture's weighted mean of its components is the mean of the points it was fitted to.
        mean = (density.weight[digit, :, None] * density.loc[digit]).sum(0)
        torch.testing.assert_close(mean, codes.mean(0), atol=2e-3, rtol=0)
