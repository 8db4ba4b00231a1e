"""The class-conditional latent density: the fitting maths (training/classes.py) against independent computations,
the mixture's draws and log-density (lvm/density.py), its file in an artifact with its SHA-256 (lvm/classes.py), the
`derive --add classes` step, and the cvae kind registered, rebuilt and trained for a few steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import lvm
from lvm.artifact import ArtifactError
from lvm.classes import CLASSES_FILE, read_classes, write_classes
from lvm.density import ClassDensity
from lvm.embedding import EMBEDDING_FILE
from lvm.networks import CVAE, KINDS, MLPModel, PPCA
from tests.factories import class_density, manifest
from training.__main__ import main
from training.classes import choose_class_density, fit_class_density, fit_mixture
from training.config import CVAEConfig
from training.cvae import train_cvae


def test_one_component_is_the_sample_mean_and_ml_covariance():
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) @ torch.tensor([[2.0, 0.0], [0.7, 0.5]])
    weight, loc, cov = fit_mixture(z, 1)
    data = z.double().numpy()
    np.testing.assert_allclose(loc[0].numpy(), data.mean(0), atol=1e-12)
    expected = np.cov(data.T, bias=True)
    np.testing.assert_allclose(cov[0].numpy(), expected, rtol=1e-3)  # the jitter is 1e-4 of the mean variance
    assert weight.tolist() == [1.0]


def test_em_recovers_two_separated_clusters():
    g = torch.Generator().manual_seed(1)
    z = torch.cat([torch.randn(300, 2, generator=g) * 0.3 + torch.tensor([3.0, 0.0]),
                   torch.randn(100, 2, generator=g) * 0.5 + torch.tensor([-3.0, 1.0])])
    weight, loc, cov = fit_mixture(z, 2, seed=0)
    order = loc[:, 0].argsort(descending=True)
    np.testing.assert_allclose(weight[order].numpy(), [0.75, 0.25], atol=0.01)
    np.testing.assert_allclose(loc[order].numpy(), [[3.0, 0.0], [-3.0, 1.0]], atol=0.12)
    np.testing.assert_allclose(cov[order].diagonal(dim1=-2, dim2=-1).sqrt().numpy(), [[0.3, 0.3], [0.5, 0.5]],
                               atol=0.06)


def test_log_prob_matches_a_float64_loop_over_components():
    density = class_density(seed=3, components=3)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(2)) * 2
    ours = density.log_prob(z).double()
    for b in range(7):
        for c in range(10):
            terms = []
            for m in range(3):
                cov = (density.scale_tril[c, m] @ density.scale_tril[c, m].T).double()
                diff = (z[b] - density.loc[c, m]).double()
                quad = float(diff @ torch.linalg.inv(cov) @ diff)
                terms.append(math.log(float(density.weight[c, m])) - 0.5 * quad
                             - 0.5 * math.log(float(torch.linalg.det(cov))) - math.log(2 * math.pi))
            top = max(terms)
            expected = top + math.log(sum(math.exp(t - top) for t in terms))
            assert abs(float(ours[b, c]) - expected) < 1e-4


def test_draws_pick_the_component_by_u_and_map_eps_through_its_factor():
    loc = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]]).expand(10, 2, 2)
    tril = torch.tensor([[1.0, 0.0], [0.5, 2.0]]).expand(10, 2, 2, 2)
    density = ClassDensity(torch.tensor([[0.25, 0.75]]).expand(10, 2), loc, tril)
    eps = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    z = density.sample(torch.tensor([4, 4, 4]), eps, torch.tensor([0.1, 0.3, 0.9999999]))
    np.testing.assert_allclose(z.numpy(), [[1.0, 2.5], [11.0, 2.5], [11.0, 2.5]], atol=1e-6)


def test_the_validation_figure_chooses_a_mixture_for_bimodal_digits():
    g = torch.Generator().manual_seed(4)
    y = torch.arange(2000) % 10
    side = torch.where(torch.rand(2000, generator=g) < 0.5, 1.0, -1.0)
    z = torch.randn(2000, 2, generator=g) * 0.2 + torch.stack([side * 2, y.float()], dim=1)
    density, record = choose_class_density(z[:1500], y[:1500], z[1500:], y[1500:], candidates=(1, 2))
    assert record["components"] == 2 and density.components == 2
    assert record["valid_log_density"]["2"] > record["valid_log_density"]["1"] + 0.5
    assert fit_class_density(z, y, 1).components == 1


def _write_vae_with_classes(root, density):
    model = MLPModel("vae", 2, [8])
    return lvm.write_artifact(root, "vae", model, manifest(), lambda folder: write_classes(folder, density, "tests"))


def test_the_density_round_trips_through_the_artifact_and_its_checksum(tmp_path):
    density = class_density(seed=5, components=2)
    path = _write_vae_with_classes(tmp_path, density)
    artifact = lvm.load_artifact(path)
    assert CLASSES_FILE in artifact.manifest["files"]
    built = artifact.build().class_density
    for name in ("weight", "loc", "scale_tril"):
        torch.testing.assert_close(getattr(built, name), getattr(density, name))
    (path / CLASSES_FILE).write_bytes((path / CLASSES_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="SHA-256"):
        lvm.load_artifact(path)
    with pytest.raises(ArtifactError, match="SHA-256"):
        read_classes(path, artifact.manifest)


def test_a_density_that_is_not_a_distribution_is_refused(tmp_path):
    bad = ClassDensity(torch.full((10, 1), 0.5), torch.zeros(10, 1, 2), torch.eye(2).expand(10, 1, 2, 2))
    path = _write_vae_with_classes(tmp_path, bad)
    with pytest.raises(ArtifactError, match="not distributions"):
        lvm.load_artifact(path).build()
    other_k = ClassDensity(torch.ones(10, 1), torch.zeros(10, 1, 3), torch.eye(3).expand(10, 1, 3, 3))
    with pytest.raises(ArtifactError, match=r"loc \(10, M, 2\)"):
        lvm.load_artifact(_write_vae_with_classes(tmp_path, other_k)).build()


def test_derive_adds_the_density_and_carries_the_other_files(capsys, fake_mnist, tmp_path):
    root = tmp_path / "artifacts"
    assert main(["fit", "--kind", "ppca", "--name", "p", "--latent-dim", "2", "--valid-size", "100",
                 "--data-dir", str(fake_mnist), "--artifacts-dir", str(root)]) == 0
    first = lvm.load_artifact(root / "p" / "1")
    assert CLASSES_FILE in first.manifest["files"] and first.manifest["class_density"]["components"] in (1, 2, 3, 4)
    # An artifact from before densities existed: the same model without the file.
    old = lvm.write_artifact(root, "old", first.build(), {k: first.manifest[k] for k in
                                                           ("training", "data", "metrics", "software")})
    capsys.readouterr()
    assert main(["derive", str(old), "--add", "classes", "--data-dir", str(fake_mnist)]) == 0
    derived = lvm.load_artifact(root / "old" / "2")  # verifies every file's SHA-256
    assert derived.manifest["derived_from"]["steps"] == ["classes"]
    assert {CLASSES_FILE, "report/digits.png"} <= derived.manifest["files"].keys()
    assert EMBEDDING_FILE not in derived.manifest["files"]  # the source had none: nothing to carry
    np.testing.assert_allclose(read_classes(derived.path, derived.manifest).loc,
                               read_classes(first.path, first.manifest).loc, atol=1e-5)  # the same fit
    # Deriving the derived version again for its report alone carries the density over byte for byte.
    assert main(["derive", str(derived.path), "--add", "report", "--data-dir", str(fake_mnist)]) == 0
    third = lvm.load_artifact(root / "old" / "3")
    assert third.manifest["files"][CLASSES_FILE] == derived.manifest["files"][CLASSES_FILE]
    assert json.loads((third.path / "manifest.json").read_text())["class_density"] == derived.manifest["class_density"]


def test_the_cvae_is_a_registered_kind_rebuilt_from_its_weights():
    assert KINDS["cvae"] is CVAE and KINDS["vae"] is MLPModel and KINDS["ppca"] is PPCA
    model = CVAE(2, [16]).eval()
    rebuilt = lvm.build_model("cvae", model.architecture(), model.state_dict())
    x, y = torch.rand(4, 784), torch.tensor([0, 3, -1, 9])
    torch.testing.assert_close(rebuilt.encode(x, y), model.encode(x, y))
    posterior = model.label_posterior(x)
    torch.testing.assert_close(posterior.sum(-1), torch.ones(4))
    # Without a label: the moments of the mixture of the ten posteriors under p(y | x).
    loc = torch.stack([model.encode_labelled(x, torch.full((4,), d))[0] for d in range(10)], dim=1)
    torch.testing.assert_close(model.encode(x)[0], (posterior[:, :, None] * loc).sum(1))
    with pytest.raises(ValueError, match="do not match"):
        lvm.build_model("cvae", model.architecture(), MLPModel("vae", 2, [16]).state_dict())


def test_the_cvae_trains_in_seconds_and_learns_the_label():
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(10, 784, generator=g).round()
    y = torch.arange(320) % 10
    x = (0.8 * prototypes[y] + 0.2 * torch.rand(320, 784, generator=g)).clamp(0, 1)
    config = CVAEConfig(latent_dim=2, hidden=(32,), epochs=4, batch_size=32, lr=3e-3, valid_size=64, num_threads=1)
    model, history = train_cvae(x[:256], y[:256], x[256:], y[256:], config)
    assert history.train_loss[-1] < history.train_loss[0] - 20 and not model.training
    assert history.valid_loss[-1] < history.valid_loss[0]
    with torch.no_grad():  # the same z decodes differently for different digits
        images = model.sample_digits(y[:10], torch.zeros(10, 2), torch.zeros(10))[1]
    assert torch.cdist(images, images).fill_diagonal_(float("inf")).min() > 0.1


def test_a_cvae_with_a_fitted_density_draws_each_digit_from_it_and_the_rest_from_the_prior():
    model = CVAE(2, [16]).eval()
    eps, u = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0.1, 0.5, 0.9, 0.3, 0.7, 0.0])
    y = torch.tensor([1, 1, 7, -1, -1, 3])
    assert model.digit_density().components == 1  # no fitted density: the prior, every digit's
    torch.testing.assert_close(model.sample_digits(y, eps, u)[0], eps)
    model.class_density = class_density(components=2)
    assert model.digit_density() is model.class_density
    z, images = model.sample_digits(y, eps, u)
    labelled = y >= 0
    torch.testing.assert_close(z[labelled], model.class_density.sample(y[labelled], eps[labelled], u[labelled]))
    torch.testing.assert_close(z[~labelled], eps[~labelled])  # no digit: the prior, the digit floor(10 u)
    with torch.no_grad():
        torch.testing.assert_close(images[3:5], torch.sigmoid(model.logits(eps[3:5], torch.tensor([3, 7]))))
