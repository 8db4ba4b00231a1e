"""AE and VAE on tiny data: shapes, a short fit that lowers the loss, determinism, the code prior, the ELBO and IWAE
figures against Pyro and against each other, and the report PNGs."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from lvm.networks import MLPModel
from training.ae import fit_code_prior, train_ae
from training.config import AEConfig, VAEConfig
from training.loop import pick_device
from training.metrics import evaluate_model, iwae_log_likelihood, mean_negative_elbo, negative_elbo
from training.report import write_report
from training.vae import VAEObjective, train_vae

TINY = {"latent_dim": 2, "hidden": (32,), "batch_size": 32, "lr": 3e-3, "valid_size": 64, "num_threads": 1}


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """256 training and 64 validation images: two prototypes plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(2, 784, generator=g).round()
    labels = torch.randint(0, 2, (320,), generator=g)
    x = (0.8 * prototypes[labels] + 0.2 * torch.rand(320, 784, generator=g)).clamp(0, 1)
    return x[:256], x[256:]


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_short_fit_lowers_the_loss_and_keeps_the_best_epoch(images, kind):
    train = train_ae if kind == "ae" else train_vae
    config = (AEConfig if kind == "ae" else VAEConfig)(epochs=4, **TINY)
    model, history = train(*images, config)
    assert isinstance(model, MLPModel) and model.kind == kind and not model.training
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.valid_loss[-1] < history.valid_loss[0]
    assert history.valid_loss[history.best_epoch - 1] == min(history.valid_loss)
    record = history.to_dict()
    assert record["epochs_run"] == 4 and record["wall_time_s"] >= 0
    z_loc, z_scale = model.encode(images[1])
    assert z_loc.shape == (64, 2) and model.decode(z_loc).shape == (64, 784)
    assert (z_scale is None) == (kind == "ae")


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_same_seed_gives_identical_weights(images, kind):
    train = train_ae if kind == "ae" else train_vae
    config = (AEConfig if kind == "ae" else VAEConfig)(epochs=1, **TINY)
    a, b = train(*images, config)[0].state_dict(), train(*images, config)[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = train(*images, config.__class__(**{**config.to_dict(), "seed": 1}))[0].state_dict()
    assert not torch.equal(a["encoder.loc.weight"], c["encoder.loc.weight"])


def test_ae_prior_is_the_gaussian_of_the_training_codes(images):
    model = MLPModel("ae", 2, [16])
    fit_code_prior(model, images[0])
    z = model.encode(images[0])[0].double()
    assert torch.allclose(model.prior_loc.double(), z.mean(0), atol=1e-5)
    L = model.prior_scale_tril.double()
    assert torch.allclose(L @ L.T, torch.cov(z.T), rtol=1e-3, atol=1e-6)
    assert torch.equal(L, L.tril())


def test_negative_elbo_matches_pyro_trace_mean_field(images):
    torch.manual_seed(0)
    model = MLPModel("vae", 2, [16])
    objective = VAEObjective(model, VAEConfig(epochs=1, **TINY))
    x = images[1]
    pyro.set_rng_seed(3)
    pyro_loss = TraceMeanField_ELBO(num_particles=2000, vectorize_particles=True).loss(objective.model, objective.guide, x)
    ours = mean_negative_elbo(model, x, seed=0) * len(x)
    # Only the reconstruction term is sampled, so both agree to Monte Carlo error (well under 0.5%).
    assert ours == pytest.approx(pyro_loss, rel=5e-3)


def test_negative_elbo_with_zero_noise_is_bce_plus_analytic_kl(images):
    model = MLPModel("vae", 3, [16]).eval()
    x = images[1][:8]
    z_loc, z_scale = model.encode(x)
    q, p = torch.distributions.Normal(z_loc, z_scale), torch.distributions.Normal(0.0, 1.0)
    kl = torch.distributions.kl_divergence(q, p).sum(-1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(z_loc), x, reduction="none").sum(-1)
    assert torch.allclose(negative_elbo(model, x, torch.zeros_like(z_loc)), bce + kl, atol=1e-4)


def test_iwae_bound_lies_above_the_elbo_and_is_deterministic(images):
    model, _ = train_vae(*images, VAEConfig(epochs=2, **TINY))
    x = images[1][:16]
    elbo = -mean_negative_elbo(model, x, seed=0)
    iwae = iwae_log_likelihood(model, x, samples=500, seed=0)
    assert iwae > elbo
    assert iwae == iwae_log_likelihood(model, x, samples=500, seed=0)
    assert math.isfinite(iwae)


def test_kl_warmup_weight_rises_linearly_to_one():
    objective = VAEObjective(MLPModel("vae", 2, [8]), VAEConfig(epochs=5, kl_warmup_epochs=3, **TINY))
    assert [objective.kl_weight(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_evaluate_model_reports_every_figure_of_its_kind(images):
    x = images[1]
    vae = evaluate_model(MLPModel("vae", 2, [8]).eval(), x, {"iwae_images": 10, "iwae_samples": 50})
    assert {"bce_per_image", "pixel_mse", "negative_elbo", "iwae_log_likelihood"} <= vae.keys()
    assert vae["iwae_images"] == 10 and vae["test_images"] == 64
    assert vae["negative_elbo"] > vae["bce_per_image"] * 0.5
    ae = evaluate_model(MLPModel("ae", 2, [8]).eval(), x)
    assert "negative_elbo" not in ae and 0 < ae["pixel_mse"] < 1


@pytest.mark.parametrize(("kind", "k", "names"), [
    ("vae", 2, {"latent.png", "reconstructions.png", "samples.png", "manifold.png"}),
    ("ae", 3, {"latent.png", "reconstructions.png", "samples.png"}),
])
def test_report_writes_pngs(tmp_path, images, kind, k, names):
    model = MLPModel(kind, k, [8]).eval()
    paths = write_report(model, images[1], torch.arange(64) % 10, tmp_path / "report")
    assert {p.name for p in paths} == names == {p.name for p in (tmp_path / "report").iterdir()}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_cuda_request_falls_back_to_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert pick_device("cuda") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        pick_device("tpu")


@pytest.mark.parametrize(("config", "message"), [
    (dict(hidden=()), "hidden widths"),
    (dict(activation="gelu"), "activation"),
    (dict(epochs=0), "epochs"),
    (dict(lr=0.0), "lr must be"),
    (dict(latent_dim=0), "latent_dim"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig(**config)
