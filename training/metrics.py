"""Test-set figures of any LatentModel, in nats per image (Bernoulli likelihood on continuous pixels, summed over
784 pixels) and pixel MSE. Pure torch on lvm models, so `evaluate` needs no training state; deterministic given seeds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lvm.networks import CVAE, MLPModel, PPCA, LatentModel

# Probabilities are kept this far from 0 and 1 when a model gives no logits (PPCA's clipped reconstructions).
_PROB_EPS = 1e-6


def _batches(x: Tensor, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def bernoulli_nll(x: Tensor, x_logits: Tensor) -> Tensor:
    """-log p(x | logits) per image, summed over pixels: (B,). Valid for continuous x in [0, 1]."""
    return F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").sum(-1)


def _reconstruction(model: LatentModel, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(x_loc, logits) of the reconstruction from the posterior mean (the code itself for the AE); a conditional
    model is given the digits y."""
    labels = y if model.conditional else None
    if isinstance(model, (MLPModel, CVAE)) and (labels is not None or not model.conditional):
        z_loc, _ = model.encode(x, labels)
        logits = model.logits(z_loc, labels)
        return torch.sigmoid(logits), logits
    x_loc = model.reconstruct(x, torch.zeros(len(x), model.latent_dim, device=x.device), labels)[0]
    return x_loc, torch.logit(x_loc.clamp(_PROB_EPS, 1 - _PROB_EPS))


@torch.no_grad()
def reconstruction_metrics(model: LatentModel, x: Tensor, batch_size: int = 1000,
                           y: Tensor | None = None) -> dict[str, float]:
    """Mean BCE per image (nats) and mean pixel MSE of reconstructions from the posterior mean (with the digits y
    for a conditional model; without them it marginalises the label)."""
    bce, sq = 0.0, 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        x_loc, logits = _reconstruction(model, xb, None if y is None else y[start:start + batch_size])
        bce += bernoulli_nll(xb, logits).sum().item()
        sq += (x_loc - xb).pow(2).sum().item()
    return {"bce_per_image": bce / len(x), "pixel_mse": sq / x.numel()}


def negative_elbo(model: MLPModel, x: Tensor, eps: Tensor) -> Tensor:
    """-ELBO per image, (B,): one-sample reconstruction term with z = loc + scale * eps, analytic KL to N(0, I)."""
    z_loc, z_scale = model.encode(x)
    z = z_loc + z_scale * eps
    # KL(N(m, s²) || N(0, 1)) = ½ (m² + s² − 1) − log s, summed over the K dimensions.
    kl = (0.5 * (z_loc.pow(2) + z_scale.pow(2) - 1.0) - z_scale.log()).sum(-1)
    return bernoulli_nll(x, model.logits(z)) + kl


@torch.no_grad()
def mean_negative_elbo(model: MLPModel, x: Tensor, seed: int, batch_size: int = 1000) -> float:
    """Mean -ELBO per image with noise from a generator seeded by `seed`, so the same call gives the same figure."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for xb in _batches(x, batch_size):
        eps = torch.randn(len(xb), model.latent_dim, generator=g, device=x.device)
        total += negative_elbo(model, xb, eps).sum().item()
    return total / len(x)


@torch.no_grad()
def iwae_log_likelihood(model: MLPModel, x: Tensor, samples: int, seed: int, chunk: int = 250_000) -> float:
    """Mean importance-weighted estimate of log p(x) per image with `samples` draws from q(z|x) each.

    log p(x) ≈ logsumexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)] − log K, z_k ~ q(z|x).
    """
    g = torch.Generator(device=x.device).manual_seed(seed)
    per_image = max(1, chunk // samples)
    total = 0.0
    for xb in _batches(x, per_image):
        z_loc, z_scale = model.encode(xb)  # (B, K)
        eps = torch.randn(samples, *z_loc.shape, generator=g, device=x.device)  # (S, B, K)
        z = z_loc + z_scale * eps
        log_q = (-0.5 * eps.pow(2) - z_scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (S, B)
        log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_lik = -bernoulli_nll(xb.expand(samples, *xb.shape), model.logits(z))
        log_w = log_lik + log_prior - log_q
        total += (torch.logsumexp(log_w, dim=0) - math.log(samples)).sum().item()
    return total / len(x)


def ppca_log_likelihood(model: PPCA, x: Tensor) -> Tensor:
    """Exact log N(x; μ, WWᵀ + σ²I) per image, (B,), in float64 via the Woodbury identity.

    C⁻¹ = (I − W M⁻¹ Wᵀ) / σ² and log|C| = (D − K) log σ² + log|M|, with M = WᵀW + σ²I.
    """
    W, s2 = model.W.double(), model.sigma2.double()
    d, k = W.shape
    M = W.T @ W + s2 * torch.eye(k, dtype=torch.float64, device=W.device)
    r = x.double() - model.mu.double()  # (B, D)
    rW = r @ W  # (B, K)
    quad = (r.pow(2).sum(-1) - (rW @ torch.linalg.inv(M) * rW).sum(-1)) / s2
    log_det = (d - k) * torch.log(s2) + torch.linalg.slogdet(M)[1]
    return -0.5 * (d * math.log(2 * math.pi) + log_det + quad)


def classical_pca_mse(x_train: Tensor, x_test: Tensor, latent_dim: int) -> float:
    """Pixel MSE of the classical PCA projection x̂ = μ + U Uᵀ(x − μ) on the top-K eigenvectors (no clipping)."""
    mu = x_train.double().mean(0)
    centred = x_train.double() - mu
    _, vectors = torch.linalg.eigh(centred.T @ centred / len(x_train))
    U = vectors[:, -latent_dim:]
    r = x_test.double() - mu
    return (r - r @ U @ U.T).pow(2).mean().item()


def negative_elbo_labelled(model: CVAE, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
    """The conditional VAE's -ELBO of x given its digit y per image, (B,): as `negative_elbo` with q(z|x,y), p(x|z,y)."""
    z_loc, z_scale = model.encode_labelled(x, y)
    kl = (0.5 * (z_loc.pow(2) + z_scale.pow(2) - 1.0) - z_scale.log()).sum(-1)
    return bernoulli_nll(x, model.logits(z_loc + z_scale * eps, y)) + kl


@torch.no_grad()
def mean_negative_elbo_labelled(model: CVAE, x: Tensor, y: Tensor, seed: int, batch_size: int = 1000) -> float:
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        eps = torch.randn(len(xb), model.latent_dim, generator=g, device=x.device)
        total += negative_elbo_labelled(model, xb, yb, eps).sum().item()
    return total / len(x)


def ppca_figures(model: PPCA, x_test: Tensor, y_test: Tensor | None, config: dict, x_train: Tensor | None) -> dict:
    figures = {"log_likelihood_per_image": ppca_log_likelihood(model, x_test).mean().item()}
    if x_train is not None:
        figures["classical_pca_mse"] = classical_pca_mse(x_train, x_test, model.latent_dim)
    return figures


def vae_figures(model: MLPModel, x_test: Tensor, y_test: Tensor | None, config: dict, x_train: Tensor | None) -> dict:
    seed = config.get("elbo_seed", 1234)
    n, samples = config.get("iwae_images", 1000), config.get("iwae_samples", 1000)
    return {"negative_elbo": mean_negative_elbo(model, x_test, seed=seed),
            "iwae_log_likelihood": iwae_log_likelihood(model, x_test[:n], samples, seed=seed),
            "iwae_images": min(n, len(x_test)), "iwae_samples": samples}


@torch.no_grad()
def cvae_figures(model: CVAE, x_test: Tensor, y_test: Tensor | None, config: dict, x_train: Tensor | None) -> dict:
    """The labelled -ELBO (an upper bound on -log p(x | y)) and how often the model's own p(y | x) names the digit."""
    if y_test is None:
        return {}
    hits = sum((model.label_posterior(x_test[i:i + 1000]).argmax(-1) == y_test[i:i + 1000]).sum().item()
               for i in range(0, len(x_test), 1000))
    return {"negative_elbo_given_label": mean_negative_elbo_labelled(model, x_test, y_test,
                                                                     seed=config.get("elbo_seed", 1234)),
            "label_posterior_accuracy": hits / len(x_test)}


def evaluate_model(model: LatentModel, x_test: Tensor, config: dict | None = None, y_test: Tensor | None = None,
                   x_train: Tensor | None = None) -> dict[str, float]:
    """Every test figure the manifest holds for this model's kind (training.kinds names each kind's own figures);
    `config` supplies the VAE's seeds and sizes, y_test the digits a conditional model is given, x_train classical
    PCA's fit."""
    from training.kinds import training_kind  # it imports this module

    config = config or {}
    metrics = reconstruction_metrics(model, x_test, y=y_test)
    figures = training_kind(model.kind).figures
    if figures is not None:
        metrics.update(figures(model, x_test, y_test, config, x_train))
    metrics["test_images"] = len(x_test)
    return metrics
