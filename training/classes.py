"""The class-conditional latent density of an unconditional model, fitted after training: the posterior means of
the training images, grouped by digit, each group fitted by a mixture of M full-covariance Gaussians (EM; M = 1 is
the closed-form mean and covariance). M is chosen per model among CANDIDATES by the mean log-density of the
validation images' posterior means under their own digit's mixture; the manifest records every candidate's figure.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lvm.density import LABELS, ClassDensity
from lvm.embedding import compute_embedding
from lvm.networks import LatentModel

CANDIDATES = (1, 2, 3, 4)
FITTED_TO = "posterior means of the training images, per digit"
_EM_ITERATIONS = 300
_EM_TOLERANCE = 1e-7  # stop when the mean log-likelihood gains less than this (nats per point)
_JITTER = 1e-4  # of the group's mean variance, on each covariance's diagonal: keeps a component from collapsing


def fit_mixture(z: Tensor, components: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Maximum-likelihood mixture of `components` Gaussians for the points z (N, K), in float64: weight (M,),
    loc (M, K), covariance (M, K, K). EM from a k-means++ start drawn with `seed`."""
    z = z.double()
    n, k = z.shape
    if n < components * (k + 1):
        raise ValueError(f"{n} points are too few for {components} components in {k} dimensions")
    jitter = _JITTER * z.var(0).mean().clamp_min(1e-12) * torch.eye(k, dtype=z.dtype)
    if components == 1:
        # The ML Gaussian: mean and covariance with divisor N.
        loc = z.mean(0, keepdim=True)
        centred = z - loc
        return torch.ones(1, dtype=z.dtype), loc, (centred.T @ centred / n + jitter)[None]
    loc = _kmeans_pp(z, components, torch.Generator().manual_seed(seed))
    cov = (torch.cov(z.T).reshape(k, k) + jitter).expand(components, k, k).clone()
    weight = torch.full((components,), 1.0 / components, dtype=z.dtype)
    previous = -math.inf
    for _ in range(_EM_ITERATIONS):
        log_joint = torch.log(weight) + _log_normal(z, loc, cov)  # (N, M)
        log_total = torch.logsumexp(log_joint, dim=1, keepdim=True)
        resp = (log_joint - log_total).exp()  # E-step: responsibilities
        mean_ll = log_total.mean().item()
        # M-step: N_m = Σ r_nm, w_m = N_m / N, μ_m = Σ r_nm z_n / N_m, Σ_m = Σ r_nm (z_n − μ_m)(z_n − μ_m)ᵀ / N_m.
        counts = resp.sum(0).clamp_min(1e-10)
        weight = counts / n
        loc = (resp.T @ z) / counts[:, None]
        centred = z[None] - loc[:, None]  # (M, N, K)
        cov = torch.einsum("nm,mni,mnj->mij", resp, centred, centred) / counts[:, None, None] + jitter
        if mean_ll - previous < _EM_TOLERANCE:
            break
        previous = mean_ll
    return weight, loc, cov


def _kmeans_pp(z: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """m seeds: the first uniformly, each next with probability proportional to its squared distance to the nearest."""
    centres = [z[torch.randint(len(z), (1,), generator=generator)].squeeze(0)]
    for _ in range(m - 1):
        d2 = torch.cdist(z, torch.stack(centres)).pow(2).min(1).values
        centres.append(z[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
    return torch.stack(centres)


def _log_normal(z: Tensor, loc: Tensor, cov: Tensor) -> Tensor:
    """log N(z_n; loc_m, cov_m), (N, M)."""
    tril = torch.linalg.cholesky(cov)  # (M, K, K)
    diff = (z[:, None, :] - loc[None]).unsqueeze(-1)  # (N, M, K, 1)
    solved = torch.linalg.solve_triangular(tril.expand(len(z), *tril.shape), diff, upper=False)[..., 0]
    log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * solved.pow(2).sum(-1) - log_det - 0.5 * z.shape[1] * math.log(2 * math.pi)


def fit_class_density(z: Tensor, y: Tensor, components: int, seed: int = 0) -> ClassDensity:
    """One mixture per digit 0-9 of the codes z (N, K) with labels y (N,)."""
    weights, locs, trils = [], [], []
    for digit in range(LABELS):
        weight, loc, cov = fit_mixture(z[y == digit], components, seed + digit)
        weights.append(weight)
        locs.append(loc)
        trils.append(torch.linalg.cholesky(cov))
    return ClassDensity(torch.stack(weights).float(), torch.stack(locs).float(), torch.stack(trils).float())


def mean_log_density(density: ClassDensity, z: Tensor, y: Tensor) -> float:
    """Mean log p(z | y) of the codes under their own digit's mixture (nats per point)."""
    return density.log_prob(z.float()).gather(1, y[:, None]).mean().item()


def choose_class_density(z_train: Tensor, y_train: Tensor, z_valid: Tensor, y_valid: Tensor,
                         candidates: tuple[int, ...] = CANDIDATES, seed: int = 0) -> tuple[ClassDensity, dict]:
    """The candidate M with the best validation figure, and the manifest's `class_density` record."""
    fitted = {m: fit_class_density(z_train, y_train, m, seed) for m in candidates}
    valid = {m: mean_log_density(d, z_valid, y_valid) for m, d in fitted.items()}
    best = max(valid, key=valid.get)
    return fitted[best], {
        "components": best,
        "fitted_to": FITTED_TO,
        "chosen_by": "mean log-density of the validation images' posterior means under their digit's mixture",
        "valid_log_density": {str(m): round(v, 4) for m, v in valid.items()},
        "train_images": len(z_train),
        "seed": seed,
    }


def class_density_for(model: LatentModel, x_train: Tensor, y_train: Tensor, x_valid: Tensor,
                      y_valid: Tensor) -> tuple[ClassDensity, dict]:
    """Encodes the training and validation images and fits the model's class density to their posterior means."""
    z_train = torch.from_numpy(compute_embedding(model, x_train, y_train).mean)
    z_valid = torch.from_numpy(compute_embedding(model, x_valid, y_valid).mean)
    return choose_class_density(z_train, y_train, z_valid, y_valid)
