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
        """AE: the Bernoulli log-likelihood of x under the decoding of its code (a score, not a density).
        VAE: the importance-weighted estimate log (1/S) Σ p(x, z_s) / q(z_s | x) with z_s = loc + scale * eps_s (Burda
        et al. 2016), the ELBO with the analytic KL, E_q log p(x | z) over the same draws, and KL(q(z | x) || p(z))."""
        z_loc, z_scale = self.encode(x)
        if z_scale is None:
            logits = self.logits(z_loc)
            return {"log_likelihood": -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)}
        z = z_loc.unsqueeze(1) + z_scale.unsqueeze(1) * eps  # (B, S, K)
        logits = self.logits(z)  # (B, S, 784)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.unsqueeze(1).expand_as(logits),
                                                       reduction="none").sum(-1)
        prior = torch.distributions.MultivariateNormal(self.prior_loc, scale_tril=self.prior_scale_tril)
        log_q = torch.distributions.Normal(z_loc.unsqueeze(1), z_scale.unsqueeze(1)).log_prob(z).sum(-1)
        log_w = log_px_z + prior.log_prob(z) - log_q
        samples = eps.shape[1]
        posterior = torch.distributions.MultivariateNormal(z_loc, scale_tril=torch.diag_embed(z_scale))
        kl = torch.distributions.kl_divergence(posterior, prior)
        reconstruction = log_px_z.mean(1)
        return {"log_likelihood": torch.logsumexp(log_w, 1) - math.log(samples), "elbo": reconstruction - kl,
                "reconstruction": reconstruction, "kl": kl}


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
        # log N(x; μ, C) with C = WWᵀ + σ²I by Woodbury and the determinant lemma, never a D x D inverse:
        # C⁻¹ = (I − W M⁻¹ Wᵀ) / σ², log|C| = (D − K) log σ² + log|M| (M from its Cholesky factor).
        d, k = W.shape
        log_det = (d - k) * s2.log() + 2 * torch.linalg.cholesky(M).diagonal().log().sum()
        self.register_buffer("_log_norm", -0.5 * (d * math.log(2 * math.pi) + log_det), persistent=False)
        self.register_buffer("_W64", W64.clone(), persistent=False)
        self.register_buffer("_encode_map64", W64 @ M_inv, persistent=False)

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
        """The exact log density log N(x; μ, WWᵀ + σ²I) of each image, in float64 (the quadratic form subtracts two
        close numbers), returned as float32."""
        diff = x.double() - self.mu.double()
        inside = ((diff @ self._W64) * (diff @ self._encode_map64)).sum(-1)  # dᵀ W M⁻¹ Wᵀ d
        quad = ((diff * diff).sum(-1) - inside) / self.sigma2.double()
        return {"log_likelihood": (self._log_norm - 0.5 * quad).float()}

    def marginal_covariance(self) -> Tensor:
        """C = W Wᵀ + σ²I, (784, 784)."""
        return self.W @ self.W.T + self.sigma2 * torch.eye(self.W.shape[0], dtype=self.W.dtype, device=self.W.device)
