"""The embedding file (lvm/embedding.py): written by `fit` and by `derive` (beside the score reference), read back as
written, refused when it does not fit its manifest; `derive` keeps the weights and metrics and says where it came
from."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import lvm
from lvm.artifact import ArtifactError, sha256_file
from lvm.embedding import EMBEDDING_FILE, Embedding, compute_embedding, read_embedding, write_embedding
from lvm.reference import read_reference
from training.__main__ import main
from training.data import load_mnist
from tests.factories import mlp


def test_round_trip_without_a_scale(tmp_path):
    model = mlp("ae")
    x, y = torch.rand(30, 784), torch.arange(30) % 10
    written = compute_embedding(model, x, y)
    assert written.scale is None and written.mean.shape == (30, 2)
    path = write_embedding(tmp_path, written)
    manifest = {"latent_dim": 2, "files": {EMBEDDING_FILE: sha256_file(path)}}
    read = read_embedding(tmp_path, manifest)
    np.testing.assert_array_equal(read.mean, model.encode(x)[0].detach().numpy())
    assert read.scale is None and read.label.tolist() == y.tolist()


@pytest.mark.parametrize("embedding, manifest_k, words", [
    (Embedding(np.zeros((4, 3), np.float32), None, np.zeros(4, np.uint8)), 2, "mean (N, 2)"),
    (Embedding(np.zeros((4, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros(4, np.uint8)), 2, "scale"),
    (Embedding(np.zeros((4, 2), np.float32), None, np.full(4, 10, np.uint8)), 2, "digits 0-9"),
])
def test_an_embedding_that_does_not_fit_is_refused(tmp_path, embedding, manifest_k, words):
    path = write_embedding(tmp_path, embedding)
    with pytest.raises(ArtifactError, match=re.escape(words)):
        read_embedding(tmp_path, {"latent_dim": manifest_k, "files": {EMBEDDING_FILE: sha256_file(path)}})


def test_a_missing_or_changed_file_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="lists no"):
        read_embedding(tmp_path, {"latent_dim": 2, "files": {}})
    path = write_embedding(tmp_path, compute_embedding(mlp("vae"), torch.rand(5, 784), torch.arange(5)))
    manifest = {"latent_dim": 2, "files": {EMBEDDING_FILE: sha256_file(path)}}
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="SHA-256"):
        read_embedding(tmp_path, manifest)


def test_fit_writes_the_embedding_and_derive_keeps_weights_and_metrics(capsys, fake_mnist, tmp_path):
    root = tmp_path / "artifacts"
    assert main(["fit", "--kind", "ppca", "--name", "p", "--latent-dim", "2", "--valid-size", "100",
                 "--data-dir", str(fake_mnist), "--artifacts-dir", str(root)]) == 0
    first = lvm.load_artifact(root / "p" / "1")
    assert EMBEDDING_FILE in first.manifest["files"]
    capsys.readouterr()
    assert main(["derive", str(first.path), "--data-dir", str(fake_mnist)]) == 0
    assert capsys.readouterr().out.strip() == str(root / "p" / "2")
    second = lvm.load_artifact(root / "p" / "2")  # verifies every file's SHA-256
    assert second.manifest["files"]["weights.safetensors"] == first.manifest["files"]["weights.safetensors"]
    assert second.manifest["metrics"] == first.manifest["metrics"]
    assert second.manifest["training"] == first.manifest["training"]
    assert second.manifest["derived_from"]["version"] == 1 and "reason" in second.manifest["derived_from"]
    test = load_mnist(fake_mnist, valid_size=100).test
    embedding = read_embedding(second.path, second.manifest)
    np.testing.assert_allclose(embedding.mean, second.build().encode(test.x)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert embedding.label.tolist() == test.y.tolist()
    assert json.loads((second.path / "manifest.json").read_text())["version"] == 2
    # Both write the score reference of the validation split, the same scores from the same weights.
    a, b = read_reference(first.path, first.manifest), read_reference(second.path, second.manifest)
    assert a.info["count"] == 100 and a.info == b.info
    np.testing.assert_allclose(b.features["log_likelihood"], a.features["log_likelihood"], rtol=1e-6)


def test_derive_of_a_missing_artifact_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["derive", str(tmp_path / "nope" / "1")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
