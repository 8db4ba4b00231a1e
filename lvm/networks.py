"""The networks of every model kind, built from a manifest's `architecture` block and a weights dict.

Torch only: training wraps these modules in its objectives, the service batches their methods. Every kind offers the
same four operations on batches: `encode`, `decode`, `reconstruct` and `sample`, with noise passed in, never drawn here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SHAPE = (28, 28)
INPUT_DIM = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
KINDS = ("ppca", "ae", "vae")

# A floor on the VAE's posterior scale keeps log-densities finite when the scale head saturates.
MIN_SCALE = 1e-4
# `score_terms` works through at most this many (image, sample) pairs at a time: the decoder's (pairs, 784) logits
# and hidden layers stay near 100 MB whatever B x S a caller asks for.
SCORE_CHUNK_PAIRS = 32_768
_LOG_2PI = math.log(2 * math.pi)

_ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh}
ACTIVATIONS = tuple(_ACTIVATIONS)


class LatentModel(nn.Module):
    """Common interface: x is (B, 784) in [0, 1], z is (B, K), eps is standard normal noise of z's shape."""

    kind: str
    likelihood: str  # the pixel likelihood the model was fitted under, recorded in the manifest
    latent_dim: int

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # The prior p(z) = N(prior_loc, L Lᵀ); N(0, I) for PPCA and the VAE, fitted to the training codes for the AE.
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale_tril", torch.eye(latent_dim))

    @property
    def has_scale(self) -> bool:
        """Whether `encode` gives a posterior scale (the AE's is None)."""
        return self.kind != "ae"

    def architecture(self) -> dict:
        """The manifest's `architecture` block: everything `lvm.build_model` needs besides the weights."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Posterior mean and standard deviation of z given x, each (B, K); the scale is None for the AE."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """Pixel means (B, 784) in [0, 1]."""
        raise NotImplementedError

    def _reconstruct_map(self, z: Tensor) -> Tensor:
        return self.decode(z)

    def reconstruct(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Images rebuilt from z = loc + scale * eps (eps = 0 gives the posterior mean): (x_loc, z_loc, z_scale)."""
        z_loc, z_scale = self.encode(x)
        z = z_loc if z_scale is None else z_loc + z_scale * eps
        return self._reconstruct_map(z), z_loc, z_scale

    # What `score_terms` gives, log_likelihood first.
    score_term_names: tuple[str, ...] = ("log_likelihood",)

    def score_terms(self, x: Tensor, eps: Tensor | None) -> dict[str, Tensor]:
        """How likely each image is under the model: per-image (B,) tensors named by `score_term_names`, in nats.
        eps (B, S, K) is standard normal noise for the models that estimate by sampling (ignored by the others)."""
        raise NotImplementedError

    def sample(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Draws from the prior given standard normal eps (B, K): (z, x_loc)."""
        z = self.prior_loc + eps @ self.prior_scale_tril.T
        return z, self.decode(z)


def _bernoulli_nll(x: Tensor, logits: Tensor) -> Tensor:
    """−log p(x | logits) summed over the pixels (last axis); x may be grey values in [0, 1] and broadcasts."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def mlp(widths: list[int], activation: str, final_activation: bool) -> nn.Sequential:
    """Linear layers through `widths`, with `activation` between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if final_activation or i < len(widths) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x (B, 784) -> z_loc (B, K) and, with a scale head, a positive z_scale (B, K)."""

    def __init__(self, latent_dim: int, hidden: list[int], activation: str, with_scale: bool) -> None:
        super().__init__()
        self.body = mlp([INPUT_DIM, *hidden], activation, final_activation=True)
        width = hidden[-1] if hidden else INPUT_DIM
        self.loc = nn.Linear(width, latent_dim)
        self.scale = nn.Linear(width, latent_dim) if with_scale else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.body(x)
        z_scale = None if self.scale is None else F.softplus(self.scale(h)) + MIN_SCALE
        return self.loc(h), z_scale


class MLPModel(LatentModel):
    """The autoencoder (`ae`) and the VAE (`vae`): MLP encoder, mirrored MLP decoder with Bernoulli logits."""

    likelihood = "bernoulli"

    def __init__(self, kind: str, latent_dim: int, hidden: list[int], activation: str = "softplus") -> None:
        if kind not in ("ae", "vae"):
            raise ValueError(f"MLPModel is for kinds 'ae' and 'vae', not {kind!r}")
        super().__init__(latent_dim)
        self.kind = kind
        self.hidden = list(hidden)
        self.activation = activation
        self.encoder = Encoder(latent_dim, self.hidden, activation, with_scale=kind == "vae")
        self.decoder = mlp([latent_dim, *reversed(self.hidden), INPUT_DIM], activation, final_activation=False)

    def architecture(self) -> dict:
        return {
            "type": "mlp",
            "input_dim": INPUT_DIM,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "scale_head": "softplus" if self.kind == "vae" else None,
            "output": "bernoulli_logits",
        }

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.encoder(x)

    def logits(self, z: Tensor) -> Tensor:
        """Bernoulli logits of the pixels, (B, 784)."""
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    @property
    def score_term_names(self) -> tuple[str, ...]:
        return ("log_likelihood", "elbo", "reconstruction", "kl") if self.kind == "vae" else ("log_likelihood",)

    def score_terms(self, x: Tensor, eps: Tensor | None) -> dict[str, Tensor]:
        """The AE: `log_likelihood` is the Bernoulli log-likelihood of x under the decoding of its code, a score and
        not a density; eps is ignored. The VAE: the importance-weighted estimate of log p(x) with the S posterior
        draws z = loc + scale * eps (Burda et al. 2016), beside `elbo` = `reconstruction` - `kl` with the same draws
        and the analytic KL(q(z|x) || N(0, I))."""
        if self.kind == "ae":
            parts = [-_bernoulli_nll(xb, self.logits(self.encode(xb)[0])) for xb in x.split(SCORE_CHUNK_PAIRS)]
            return {"log_likelihood": torch.cat(parts).float() if parts else x.new_zeros(0)}
        if eps is None or eps.ndim != 3 or eps.shape[0] != len(x) or eps.shape[2] != self.latent_dim:
            raise ValueError(f"the VAE's score needs eps of shape ({len(x)}, S, {self.latent_dim})")
        per_chunk = max(1, SCORE_CHUNK_PAIRS // max(1, eps.shape[1]))
        parts = [self._vae_terms(xb, eb) for xb, eb in zip(x.split(per_chunk), eps.split(per_chunk))]
        if not parts:
            return {k: x.new_zeros(0) for k in ("log_likelihood", "elbo", "reconstruction", "kl")}
        return {k: torch.cat([p[k] for p in parts]).float() for k in parts[0]}

    def _vae_terms(self, x: Tensor, eps: Tensor) -> dict[str, Tensor]:
        z_loc, z_scale = self.encode(x)  # (B, K)
        z = z_loc.unsqueeze(1) + z_scale.unsqueeze(1) * eps  # (B, S, K)
        log_lik = -_bernoulli_nll(x.unsqueeze(1), self.logits(z))  # (B, S)
        # log w = log p(x|z) + log N(z; 0, I) − log N(z; loc, scale²); the 2π terms cancel.
        log_w = log_lik + (-0.5 * z.pow(2) + 0.5 * eps.pow(2)).sum(-1) + z_scale.log().sum(-1, keepdim=True)
        samples = eps.shape[1]
        # KL(N(m, s²) || N(0, 1)) = ½ (m² + s² − 1) − log s, summed over the K dimensions.
        kl = (0.5 * (z_loc.pow(2) + z_scale.pow(2) - 1.0) - z_scale.log()).sum(-1)
        reconstruction = log_lik.mean(-1)
        return {"log_likelihood": torch.logsumexp(log_w, dim=-1) - math.log(samples),
                "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}


class PPCA(LatentModel):
    """Probabilistic PCA (Tipping & Bishop 1999): x = W z + mu + noise, z ~ N(0, I), noise ~ N(0, sigma2 I)."""

    kind = "ppca"
    likelihood = "gaussian"

    def __init__(self, W: Tensor, mu: Tensor, sigma2: Tensor) -> None:
        super().__init__(W.shape[1])
        self.register_buffer("W", W.clone())
        self.register_buffer("mu", mu.clone())
        self.register_buffer("sigma2", sigma2.clone().reshape(()))
        W64, s2 = W.double(), sigma2.double().reshape(())
        eye = torch.eye(W.shape[1], dtype=torch.float64)
        M = W64.T @ W64 + s2 * eye  # M = WᵀW + σ²I, (K, K)
        M_inv = torch.linalg.inv(M)
        # Posterior p(z|x) = N(M⁻¹Wᵀ(x − μ), σ²M⁻¹); as a row-vector map, loc = (x − μ) W M⁻¹.
        self.register_buffer("_encode_map", (W64 @ M_inv).to(W.dtype), persistent=False)
        self.register_buffer("_post_scale", (s2 * M_inv).diagonal().sqrt().to(W.dtype), persistent=False)
        # Classical PCA projection from the posterior mean: x̂ = W (WᵀW)⁻¹ M E[z|x] + μ; row form z M (WᵀW)⁻¹ Wᵀ.
        self.register_buffer(
            "_reconstruct_matrix", (M @ torch.linalg.inv(W64.T @ W64) @ W64.T).to(W.dtype), persistent=False
        )
        # For the exact log density (Woodbury): C = WWᵀ + σ²I, C⁻¹ = (I − W M⁻¹ Wᵀ) / σ², log|C| = (D − K) log σ² +
        # log|M|; with M = L Lᵀ, rᵀC⁻¹r = (|r|² − |L⁻¹ Wᵀr|²) / σ². Kept in float64: the difference cancels.
        L = torch.linalg.cholesky(M)
        self.register_buffer("_M_cholesky", L, persistent=False)
        d, k = W.shape
        log_det = (d - k) * torch.log(s2) + 2 * L.diagonal().log().sum()
        self.register_buffer("_log_norm", -0.5 * (d * _LOG_2PI + log_det), persistent=False)

    def architecture(self) -> dict:
        return {"type": "ppca", "input_dim": INPUT_DIM, "latent_dim": self.latent_dim}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z_loc = (x - self.mu) @ self._encode_map
        # The posterior scale is the same for every x; a real (B, K) array, not a broadcast view, so that callers
        # may serialise or hand it on without copying first.
        return z_loc, self._post_scale.expand_as(z_loc).contiguous()

    def decode(self, z: Tensor) -> Tensor:
        return (z @ self.W.T + self.mu).clamp(0.0, 1.0)

    def _reconstruct_map(self, z: Tensor) -> Tensor:
        return (z @ self._reconstruct_matrix + self.mu).clamp(0.0, 1.0)

    def score_terms(self, x: Tensor, eps: Tensor | None) -> dict[str, Tensor]:
        """The exact `log_likelihood` log N(x; μ, WWᵀ + σ²I) per image, computed in float64; eps is ignored."""
        L, norm = self._M_cholesky.double(), self._log_norm.double()
        r = x.double() - self.mu.double()  # (B, D)
        y = torch.linalg.solve_triangular(L, (r @ self.W.double()).T, upper=False)  # L⁻¹Wᵀr, (K, B)
        quad = (r.pow(2).sum(-1) - y.pow(2).sum(0)) / self.sigma2.double()
        return {"log_likelihood": (norm - 0.5 * quad).float()}

    def marginal_covariance(self) -> Tensor:
        """C = W Wᵀ + σ²I, (784, 784)."""
        return self.W @ self.W.T + self.sigma2 * torch.eye(self.W.shape[0], dtype=self.W.dtype, device=self.W.device)
