"""The latent distribution of each digit, p(z | y) for y = 0..9: a mixture of M full-covariance Gaussians per class.

Torch only, no I/O (lvm/classes.py reads and writes it; training/classes.py fits it). For the unconditional models it
is a density fitted after training to the training set's posterior means; for the conditional VAE every digit's is
the prior N(0, I) itself. Noise is passed in, never drawn here: eps (B, K) standard normal picks the point, u (B,)
uniform in [0, 1) picks the component.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LABELS = 10


class ClassDensity(nn.Module):
    """weight (C, M) sums to 1 per class; loc (C, M, K); scale_tril (C, M, K, K) lower triangular, covariance L Lᵀ.
    Buffers are not persistent: the density travels in its own file, never in a model's weights."""

    def __init__(self, weight: Tensor, loc: Tensor, scale_tril: Tensor) -> None:
        super().__init__()
        c, m, k = loc.shape
        if weight.shape != (c, m) or scale_tril.shape != (c, m, k, k):
            raise ValueError(f"weight {tuple(weight.shape)}, loc {tuple(loc.shape)} and scale_tril "
                             f"{tuple(scale_tril.shape)} do not describe C classes of M components in K dimensions")
        self.register_buffer("weight", weight.clone(), persistent=False)
        self.register_buffer("loc", loc.clone(), persistent=False)
        self.register_buffer("scale_tril", scale_tril.clone(), persistent=False)
        # The last boundary is pushed past 1 so that u just below 1 never falls off the end in float32.
        cumulative = weight.cumsum(-1)
        cumulative[:, -1] = 2.0
        self.register_buffer("_cumulative", cumulative, persistent=False)

    @classmethod
    def standard(cls, latent_dim: int, classes: int = LABELS) -> ClassDensity:
        """N(0, I) for every class: the conditional VAE's, whose prior does not depend on the digit."""
        return cls(torch.ones(classes, 1), torch.zeros(classes, 1, latent_dim),
                   torch.eye(latent_dim).expand(classes, 1, latent_dim, latent_dim))

    @property
    def classes(self) -> int:
        return self.loc.shape[0]

    @property
    def components(self) -> int:
        return self.loc.shape[1]

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[2]

    def sample(self, y: Tensor, eps: Tensor, u: Tensor) -> Tensor:
        """z (B, K) from p(z | y): component m where u falls in class y's cumulative weights, z = loc + L eps."""
        m = (u[:, None] >= self._cumulative[y]).sum(-1)  # (B,) the first boundary above u
        loc, tril = self.loc[y, m], self.scale_tril[y, m]  # (B, K), (B, K, K)
        return loc + (tril @ eps[:, :, None])[:, :, 0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z | y) for every class y, (B, C): log Σ_m w_ym N(z; loc_ym, L_ym L_ymᵀ)."""
        diff = z[:, None, None, :] - self.loc  # (B, C, M, K)
        tril = self.scale_tril.expand(len(z), *self.scale_tril.shape)
        solved = torch.linalg.solve_triangular(tril, diff[..., None], upper=False)[..., 0]  # L⁻¹(z − μ)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # ½ log|Σ| = Σ log L_ii
        log_normal = -0.5 * solved.pow(2).sum(-1) - log_det - 0.5 * self.latent_dim * math.log(2 * math.pi)
        return torch.logsumexp(self.weight.log() + log_normal, dim=-1)

    def covariance(self) -> Tensor:
        """(C, M, K, K): L Lᵀ."""
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    def to_json(self) -> dict:
        """Lists for a JSON reply: weight (C, M), loc (C, M, K), covariance (C, M, K, K)."""
        return {"classes": self.classes, "components": self.components, "latent_dim": self.latent_dim,
                "weight": self.weight.tolist(), "loc": self.loc.tolist(), "covariance": self.covariance().tolist()}
