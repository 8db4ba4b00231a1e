"""Probabilistic PCA in closed form (Tipping & Bishop 1999), fitted by a float64 eigendecomposition of the sample
covariance of the training images. The model itself (encode, decode, reconstruct) is lvm's PPCA."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from lvm.networks import PPCA
from training.config import PPCAConfig


def fit_ppca(x: Tensor, latent_dim: int) -> PPCA:
    """The maximum-likelihood PPCA of x (N, D) with K = latent_dim, rotation R = I.

    S = (1/N) Σ (x − μ)(x − μ)ᵀ = U Λ Uᵀ (eigenvalues descending); σ² = mean of the D − K discarded eigenvalues;
    W = U_K (Λ_K − σ²I)^½.
    """
    n, d = x.shape
    if not 0 < latent_dim < d:
        raise ValueError(f"latent_dim must be between 1 and {d - 1}, got {latent_dim}")
    if n < 2:
        raise ValueError(f"PPCA needs at least 2 images, got {n}")
    x64 = x.double()
    mu = x64.mean(0)
    centred = x64 - mu
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / n)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    sigma2 = eigenvalues[latent_dim:].mean()
    if not sigma2 > 0:
        raise ValueError("the discarded eigenvalues are all zero: the images span at most K dimensions")
    U = eigenvectors[:, :latent_dim]
    # Eigenvectors are defined up to sign: make each column's largest entry positive so that refits agree.
    signs = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))
    U = U * signs
    W = U * (eigenvalues[:latent_dim] - sigma2).clamp_min(0.0).sqrt()
    return PPCA(W.float(), mu.float(), sigma2.float())


def train_ppca(x_train: Tensor, config: PPCAConfig) -> tuple[PPCA, dict]:
    """Fits PPCA; returns the model and the manifest's run record (wall time; no epochs for a closed form)."""
    started = time.perf_counter()
    model = fit_ppca(x_train, config.latent_dim).eval()
    return model, {"epochs_run": 0, "best_epoch": 0, "wall_time_s": round(time.perf_counter() - started, 1),
                   "device": "cpu"}


def train(data, config: PPCAConfig) -> tuple[PPCA, dict]:
    """The kind registry's entry point (training.kinds)."""
    return train_ppca(data.train.x, config)
