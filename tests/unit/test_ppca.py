"""PPCA's closed form against direct computations: covariance, posterior, log-likelihood, reconstruction."""

from __future__ import annotations

import math

import pytest
import torch

from training.metrics import classical_pca_mse, ppca_log_likelihood
from training.pca import fit_ppca

D = 784


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """400 images in [0, 1] from a low-rank model plus noise, so the top eigenvalues stand out."""
    g = torch.Generator().manual_seed(0)
    factors = torch.randn(400, 5, generator=g) @ torch.randn(5, D, generator=g) * 0.05
    return (0.5 + factors + 0.02 * torch.randn(400, D, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def model(x):
    return fit_ppca(x, 3)


def _covariance(x):
    centred = x.double() - x.double().mean(0)
    return centred.T @ centred / len(x)


def test_sigma2_is_mean_of_discarded_eigenvalues_and_W_matches(x, model):
    eigenvalues, eigenvectors = torch.linalg.eigh(_covariance(x))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    sigma2 = eigenvalues[3:].mean()
    assert model.sigma2.item() == pytest.approx(sigma2.item(), rel=1e-5)
    # W Wᵀ = U_K (Λ_K − σ²I) U_Kᵀ, which is free of the sign of each eigenvector.
    expected = eigenvectors[:, :3] @ torch.diag(eigenvalues[:3] - sigma2) @ eigenvectors[:, :3].T
    assert torch.allclose((model.W @ model.W.T).double(), expected, atol=1e-6)
    assert torch.allclose(model.mu.double(), x.double().mean(0), atol=1e-6)


def test_marginal_covariance_is_W_Wt_plus_sigma2_I(model):
    W, s2 = model.W.double(), model.sigma2.double()
    assert torch.allclose(model.marginal_covariance().double(), W @ W.T + s2 * torch.eye(D, dtype=torch.float64),
                          atol=1e-7)


def test_encode_gives_the_exact_posterior(x, model):
    # Direct: M = WᵀW + σ²I, mean M⁻¹Wᵀ(x − μ), covariance σ²M⁻¹.
    W, s2, mu = model.W.double(), model.sigma2.double(), model.mu.double()
    M = W.T @ W + s2 * torch.eye(3, dtype=torch.float64)
    loc = (torch.linalg.solve(M, W.T @ (x.double() - mu).T)).T
    scale = (s2 * torch.linalg.inv(M)).diagonal().sqrt()
    z_loc, z_scale = model.encode(x)
    assert torch.allclose(z_loc.double(), loc, atol=1e-4)
    assert torch.allclose(z_scale.double(), scale.expand_as(loc), rtol=1e-5)


def test_posterior_agrees_with_bayes_rule_on_the_joint_gaussian(x, model):
    # p(z|x) from the joint of (z, x): mean Wᵀ C⁻¹ (x − μ), covariance I − Wᵀ C⁻¹ W.
    W, mu = model.W.double(), model.mu.double()
    C = model.marginal_covariance().double()
    loc = (W.T @ torch.linalg.solve(C, (x[:5].double() - mu).T)).T
    cov = torch.eye(3, dtype=torch.float64) - W.T @ torch.linalg.solve(C, W)
    z_loc, z_scale = model.encode(x[:5])
    assert torch.allclose(z_loc.double(), loc, atol=1e-4)
    assert torch.allclose(z_scale[0].double(), cov.diagonal().sqrt(), rtol=1e-4)


def test_log_likelihood_is_the_exact_gaussian_density(x, model):
    W = model.W.double()
    C = W @ W.T + model.sigma2.double() * torch.eye(D, dtype=torch.float64)
    direct = torch.distributions.MultivariateNormal(model.mu.double(), C)
    assert torch.allclose(ppca_log_likelihood(model, x[:20]), direct.log_prob(x[:20].double()), rtol=1e-9, atol=1e-6)


def test_log_likelihood_is_maximal_at_the_fitted_sigma2(x, model):
    """The MLE: scaling σ² either way lowers the mean log-likelihood of the training data."""
    from lvm.networks import PPCA

    best = ppca_log_likelihood(model, x).mean()
    for factor in (0.8, 1.25):
        other = PPCA(model.W, model.mu, model.sigma2 * factor)
        assert ppca_log_likelihood(other, x).mean() < best


def test_reconstruction_equals_the_classical_projection(x, model):
    eigenvectors = torch.linalg.eigh(_covariance(x))[1].flip(1)[:, :3]
    mu = x.double().mean(0)
    projected = (mu + (x.double() - mu) @ eigenvectors @ eigenvectors.T).clamp(0, 1)
    rebuilt = model.reconstruct(x, torch.zeros(len(x), 3))[0]
    assert torch.allclose(rebuilt.double(), projected, atol=1e-5)


def test_classical_pca_mse_matches_the_projection(x):
    eigenvectors = torch.linalg.eigh(_covariance(x))[1].flip(1)[:, :2]
    mu = x.double().mean(0)
    r = x.double() - mu
    assert classical_pca_mse(x, x, 2) == pytest.approx((r - r @ eigenvectors @ eigenvectors.T).pow(2).mean().item())


def test_decode_is_W_z_plus_mu_clipped(model):
    z = torch.tensor([[0.0, 0.0, 0.0], [100.0, -100.0, 50.0]])
    x_loc = model.decode(z)
    assert torch.allclose(x_loc[0], model.mu.clamp(0, 1))
    assert torch.allclose(x_loc[1], (z[1] @ model.W.T + model.mu).clamp(0, 1))
    assert x_loc.min() >= 0 and x_loc.max() <= 1


def test_refits_are_identical(x, model):
    assert torch.equal(fit_ppca(x, 3).W, model.W)


@pytest.mark.parametrize("k", [0, D])
def test_latent_dim_out_of_range_is_refused(x, k):
    with pytest.raises(ValueError, match="latent_dim"):
        fit_ppca(x, k)


def test_log_likelihood_units_are_nats_per_image(model):
    """A sanity anchor: the density at μ equals the Gaussian normaliser −½(D log 2π + log|C|)."""
    W = model.W.double()
    log_det = torch.linalg.slogdet(W @ W.T + model.sigma2.double() * torch.eye(D, dtype=torch.float64))[1]
    at_mean = ppca_log_likelihood(model, model.mu[None])
    assert at_mean.item() == pytest.approx(-0.5 * (D * math.log(2 * math.pi) + log_det.item()), rel=1e-9)
