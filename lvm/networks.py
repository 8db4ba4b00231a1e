"""The networks of every model kind, built from a manifest's `architecture` block and a weights dict, and the kind
registry: each model class states the kinds it serves, the tensors an architecture needs, how it is rebuilt from them
and the likelihood it is fitted under, so nothing outside a class branches on a kind's name.

Torch only: training wraps these modules in its objectives, the service batches their methods. Every kind offers the
same operations on batches: `encode`, `decode`, `reconstruct`, `sample` and `sample_digits`, with noise passed in,
never drawn here. Labels y are int64 digits 0-9, and -1 where no digit is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvm.density import LABELS, ClassDensity

IMAGE_SHAPE = (28, 28)
INPUT_DIM = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

# A floor on the VAE's posterior scale keeps log-densities finite when the scale head saturates.
MIN_SCALE = 1e-4
# `score_terms` works through at most this many (image, sample) pairs at a time: the decoder's (pairs, 784) logits
# and hidden layers stay near 13 MB whatever B x S a caller asks for, inside a server CPU's cache (8x this was 20%
# slower per image on one core: BENCHMARKS.md, "score").
SCORE_CHUNK_PAIRS = 4096
_LOG_2PI = math.log(2 * math.pi)

_ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh}
ACTIVATIONS = tuple(_ACTIVATIONS)

# kind -> the class that serves it, filled by @register; `kind in KINDS` and `", ".join(KINDS)` work as on a tuple.
KINDS: dict[str, type[LatentModel]] = {}


def register(cls: type[LatentModel]) -> type[LatentModel]:
    """Class decorator: adds each of cls.kinds to KINDS."""
    for kind in cls.kinds:
        if kind in KINDS:
            raise ValueError(f"kind {kind!r} is registered twice ({KINDS[kind].__name__}, {cls.__name__})")
        KINDS[kind] = cls
    return cls


def model_class(kind: str) -> type[LatentModel]:
    """The class serving `kind`; ValueError for a kind nobody registered."""
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return cls


class LatentModel(nn.Module):
    """Common interface: x is (B, 784) in [0, 1], z is (B, K), eps is standard normal noise of z's shape, y (B,) are
    digits (-1: none given)."""

    kinds: tuple[str, ...] = ()  # the kind names this class serves
    kind: str
    likelihood: str  # the pixel likelihood the model was fitted under, recorded in the manifest
    latent_dim: int
    conditional = False  # whether the networks themselves take the digit (encode, decode, reconstruct)

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # The prior p(z) = N(prior_loc, L Lᵀ); N(0, I) for PPCA and the VAE, fitted to the training codes for the AE.
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale_tril", torch.eye(latent_dim))
        # p(z | digit), fitted after training and read from the artifact's own file (lvm.classes); None until set.
        self.class_density: ClassDensity | None = None

    # -- the kind registry's questions, answered by each class for the kinds it serves --

    @classmethod
    def weight_shapes(cls, kind: str, architecture: dict) -> dict[str, tuple[int, ...]]:
        """The name and shape of every tensor the architecture needs; ValueError when it is malformed."""
        raise NotImplementedError

    @classmethod
    def required_weights(cls, kind: str, architecture: dict) -> tuple[str, ...]:
        """The tensors an artifact must hold (the rest of weight_shapes may be left out)."""
        return tuple(cls.weight_shapes(kind, architecture))

    @classmethod
    def from_weights(cls, kind: str, architecture: dict, tensors: dict[str, Tensor]) -> LatentModel:
        """The model with these weights (shapes already checked against weight_shapes)."""
        raise NotImplementedError

    @property
    def has_scale(self) -> bool:
        """Whether `encode` gives a posterior scale (the AE's is None)."""
        return True

    def architecture(self) -> dict:
        """The manifest's `architecture` block: everything `lvm.build_model` needs besides the weights."""
        raise NotImplementedError

    # -- the operations --

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Posterior mean and standard deviation of z given x, each (B, K); the scale is None for the AE. An
        unconditional model's posterior does not depend on y."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Pixel means (B, 784) in [0, 1]."""
        raise NotImplementedError

    def _reconstruct_map(self, z: Tensor) -> Tensor:
        return self.decode(z)

    def reconstruct(self, x: Tensor, eps: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
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

    def digit_density(self) -> ClassDensity | None:
        """p(z | digit) as `sample_digits` draws from it; None when this model has none (no fitted density)."""
        return self.class_density

    def sample_digits(self, y: Tensor, eps: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Draws of the digits y (B,) given eps (B, K) standard normal and u (B,) uniform in [0, 1): rows with y = -1
        are draws from the prior (as `sample`), the others from p(z | y). (z, x_loc)."""
        z = self.prior_loc + eps @ self.prior_scale_tril.T
        labelled = y >= 0
        if bool(labelled.any()):
            if self.class_density is None:
                raise ValueError(f"this {self.kind} model has no class-conditional density to draw digits from")
            z = torch.where(labelled[:, None], self.class_density.sample(y.clamp(min=0), eps, u), z)
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
    """x (B, input_dim) -> z_loc (B, K) and, with a scale head, a positive z_scale (B, K)."""

    def __init__(self, latent_dim: int, hidden: list[int], activation: str, with_scale: bool,
                 input_dim: int = INPUT_DIM) -> None:
        super().__init__()
        self.body = mlp([input_dim, *hidden], activation, final_activation=True)
        width = hidden[-1] if hidden else input_dim
        self.loc = nn.Linear(width, latent_dim)
        self.scale = nn.Linear(width, latent_dim) if with_scale else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.body(x)
        z_scale = None if self.scale is None else F.softplus(self.scale(h)) + MIN_SCALE
        return self.loc(h), z_scale


def _mlp_fields(architecture: dict) -> tuple[int, list[int], str]:
    """(latent_dim, hidden, activation) of an MLP architecture block; ValueError when one is malformed or too large."""
    from lvm.architecture import check_sizes  # the bounds live there; it imports this module

    if not isinstance(architecture, dict):
        raise ValueError("architecture must be an object")
    latent_dim, hidden, activation = (architecture.get(k) for k in ("latent_dim", "hidden", "activation"))
    check_sizes(latent_dim, hidden)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    return latent_dim, list(hidden), activation


def _meta_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of a module built on torch's meta device, which records shapes only."""
    with torch.device("meta"):
        model = build()
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@register
class MLPModel(LatentModel):
    """The autoencoder (`ae`) and the VAE (`vae`): MLP encoder, mirrored MLP decoder with Bernoulli logits."""

    kinds = ("ae", "vae")
    likelihood = "bernoulli"
    _SCALE_HEAD = {"ae": False, "vae": True}  # the VAE's encoder gives a posterior scale, the AE's a point

    def __init__(self, kind: str, latent_dim: int, hidden: list[int], activation: str = "softplus") -> None:
        if kind not in self.kinds:
            raise ValueError(f"MLPModel is for kinds {', '.join(map(repr, self.kinds))}, not {kind!r}")
        super().__init__(latent_dim)
        self.kind = kind
        self.hidden = list(hidden)
        self.activation = activation
        self.encoder = Encoder(latent_dim, self.hidden, activation, with_scale=self._SCALE_HEAD[kind])
        self.decoder = mlp([latent_dim, *reversed(self.hidden), INPUT_DIM], activation, final_activation=False)

    @classmethod
    def weight_shapes(cls, kind: str, architecture: dict) -> dict[str, tuple[int, ...]]:
        latent_dim, hidden, activation = _mlp_fields(architecture)
        return _meta_shapes(lambda: cls(kind, latent_dim, hidden, activation))

    @classmethod
    def from_weights(cls, kind: str, architecture: dict, tensors: dict[str, Tensor]) -> LatentModel:
        model = cls(kind, *_mlp_fields(architecture))
        model.load_state_dict(tensors, strict=True)
        return model

    @property
    def has_scale(self) -> bool:
        return self.encoder.scale is not None

    def architecture(self) -> dict:
        return {
            "type": "mlp",
            "input_dim": INPUT_DIM,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "scale_head": "softplus" if self.has_scale else None,
            "output": "bernoulli_logits",
        }

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return self.encoder(x)

    def logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Bernoulli logits of the pixels, (B, 784)."""
        return self.decoder(z)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    @property
    def score_term_names(self) -> tuple[str, ...]:
        return ("log_likelihood", "elbo", "reconstruction", "kl") if self.has_scale else ("log_likelihood",)

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


@register
class PPCA(LatentModel):
    """Probabilistic PCA (Tipping & Bishop 1999): x = W z + mu + noise, z ~ N(0, I), noise ~ N(0, sigma2 I)."""

    kinds = ("ppca",)
    kind = "ppca"
    likelihood = "gaussian"
    _REQUIRED = ("W", "mu", "sigma2")  # its prior (zero mean, identity) may be left out

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

    @classmethod
    def weight_shapes(cls, kind: str, architecture: dict) -> dict[str, tuple[int, ...]]:
        from lvm.architecture import check_sizes

        if not isinstance(architecture, dict):
            raise ValueError("architecture must be an object")
        k = architecture.get("latent_dim")
        check_sizes(k)
        return {"W": (INPUT_DIM, k), "mu": (INPUT_DIM,), "sigma2": (), "prior_loc": (k,), "prior_scale_tril": (k, k)}

    @classmethod
    def required_weights(cls, kind: str, architecture: dict) -> tuple[str, ...]:
        return cls._REQUIRED

    @classmethod
    def from_weights(cls, kind: str, architecture: dict, tensors: dict[str, Tensor]) -> LatentModel:
        model = cls(tensors["W"], tensors["mu"], tensors["sigma2"])
        model.load_state_dict({**model.state_dict(), **tensors}, strict=True)
        return model

    def architecture(self) -> dict:
        return {"type": "ppca", "input_dim": INPUT_DIM, "latent_dim": self.latent_dim}

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_loc = (x - self.mu) @ self._encode_map
        # The posterior scale is the same for every x; a real (B, K) array, not a broadcast view, so that callers
        # may serialise or hand it on without copying first.
        return z_loc, self._post_scale.expand_as(z_loc).contiguous()

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
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


@register
class CVAE(LatentModel):
    """The conditional VAE (`cvae`): encoder q(z | x, y) on [x | onehot(y)], decoder p(x | z, y) on [z | onehot(y)]
    with Bernoulli logits, prior p(z) = N(0, I) whatever the digit and p(y) uniform over the ten digits.

    Without a digit (y = -1) the label is marginalised under the model's own posterior p(y | x) ∝ p(y) exp ELBO(x, y)
    (the ELBO at the posterior mean: deterministic): `encode` gives the moments of the mixture Σ_y p(y|x) q(z|x,y),
    `reconstruct` the mixture of each label's reconstruction, and `decode` the pixel mean of p(x | z) =
    Σ_y p(y) p(x | z, y), the blend of the ten digits at z.
    """

    kinds = ("cvae",)
    kind = "cvae"
    likelihood = "bernoulli"
    conditional = True
    labels = LABELS

    def __init__(self, latent_dim: int, hidden: list[int], activation: str = "softplus") -> None:
        super().__init__(latent_dim)
        self.hidden = list(hidden)
        self.activation = activation
        self.encoder = Encoder(latent_dim, self.hidden, activation, with_scale=True, input_dim=INPUT_DIM + LABELS)
        self.decoder = mlp([latent_dim + LABELS, *reversed(self.hidden), INPUT_DIM], activation, final_activation=False)

    @classmethod
    def weight_shapes(cls, kind: str, architecture: dict) -> dict[str, tuple[int, ...]]:
        latent_dim, hidden, activation = _mlp_fields(architecture)
        return _meta_shapes(lambda: cls(latent_dim, hidden, activation))

    @classmethod
    def from_weights(cls, kind: str, architecture: dict, tensors: dict[str, Tensor]) -> LatentModel:
        model = cls(*_mlp_fields(architecture))
        model.load_state_dict(tensors, strict=True)
        return model

    def architecture(self) -> dict:
        return {
            "type": "conditional_mlp",
            "input_dim": INPUT_DIM,
            "labels": LABELS,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "scale_head": "softplus",
            "output": "bernoulli_logits",
        }

    def _onehot(self, y: Tensor, like: Tensor) -> Tensor:
        return F.one_hot(y.long(), LABELS).to(like.dtype)

    def encode_labelled(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x, y) for digits y (B,) all in 0-9: loc and scale, (B, K) each."""
        return self.encoder(torch.cat([x, self._onehot(y, x)], dim=-1))

    def logits(self, z: Tensor, y: Tensor) -> Tensor:
        """Bernoulli logits of p(x | z, y) for digits y (B,) all in 0-9, (B, 784)."""
        return self.decoder(torch.cat([z, self._onehot(y, z)], dim=-1))

    def _every_label(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(z | x, y) for each of the ten digits and the label posterior: loc, scale (B, 10, K), p(y | x) (B, 10)."""
        b = len(x)
        y = torch.arange(LABELS, device=x.device).repeat(b)  # (B * 10,): 0..9, 0..9, ...
        xr = x.repeat_interleave(LABELS, dim=0)
        loc, scale = self.encode_labelled(xr, y)
        # ELBO(x, y) at z = loc: log p(x | loc, y) − KL(q(z|x,y) || N(0, I)); p(y) is uniform, so it cancels.
        log_lik = -F.binary_cross_entropy_with_logits(self.logits(loc, y), xr, reduction="none").sum(-1)
        kl = (0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()).sum(-1)
        posterior = torch.softmax((log_lik - kl).reshape(b, LABELS), dim=-1)
        k = self.latent_dim
        return loc.reshape(b, LABELS, k), scale.reshape(b, LABELS, k), posterior

    def label_posterior(self, x: Tensor) -> Tensor:
        """p(y | x) ∝ p(y) exp ELBO(x, y), (B, 10): the model's own classifier."""
        return self._every_label(x)[2]

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if y is not None and bool((y >= 0).all()):
            return self.encode_labelled(x, y)
        loc, scale, w = self._every_label(x)
        # Moments of the mixture Σ_y w_y N(loc_y, scale_y²): mean Σ w loc, variance Σ w (scale² + loc²) − mean².
        mean = (w[:, :, None] * loc).sum(1)
        var = (w[:, :, None] * (scale.pow(2) + loc.pow(2))).sum(1) - mean.pow(2)
        z_scale = var.clamp_min(MIN_SCALE**2).sqrt()
        if y is None:
            return mean, z_scale
        labelled = (y >= 0)[:, None]
        given_loc, given_scale = self.encode_labelled(x, y.clamp(min=0))
        return torch.where(labelled, given_loc, mean), torch.where(labelled, given_scale, z_scale)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is not None and bool((y >= 0).all()):
            return torch.sigmoid(self.logits(z, y))
        b = len(z)
        labels = torch.arange(LABELS, device=z.device).repeat(b)
        every = torch.sigmoid(self.logits(z.repeat_interleave(LABELS, dim=0), labels)).reshape(b, LABELS, -1)
        blend = every.mean(1)  # p(y) uniform
        if y is None:
            return blend
        return torch.where((y >= 0)[:, None], every[torch.arange(b, device=z.device), y.clamp(min=0)], blend)

    def reconstruct(self, x: Tensor, eps: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z_loc, z_scale = self.encode(x, y)
        if y is not None and bool((y >= 0).all()):
            return torch.sigmoid(self.logits(z_loc + z_scale * eps, y)), z_loc, z_scale
        loc, scale, w = self._every_label(x)
        b = len(x)
        z = (loc + scale * eps[:, None, :]).reshape(b * LABELS, -1)
        labels = torch.arange(LABELS, device=x.device).repeat(b)
        every = torch.sigmoid(self.logits(z, labels)).reshape(b, LABELS, -1)
        mixed = (w[:, :, None] * every).sum(1)
        if y is None:
            return mixed, z_loc, z_scale
        labelled = (y >= 0)[:, None]
        given = every[torch.arange(b, device=x.device), y.clamp(min=0)]
        return torch.where(labelled, given, mixed), z_loc, z_scale

    def score_terms(self, x: Tensor, eps: Tensor | None) -> dict[str, Tensor]:
        """log p(x) = log Σ_y p(y) p(x | y), each p(x | y) by the importance-weighted estimate with the draws
        z_s = loc_y + scale_y * eps_s of q(z | x, y) (the same eps (B, S, K) for every digit)."""
        b, s = eps.shape[:2]
        per_label = []
        for digit in range(LABELS):  # one digit at a time: a pass holds B x S decodes, not ten times as many
            y = torch.full((b,), digit, device=x.device)
            loc, scale = self.encode_labelled(x, y)
            z = loc[:, None] + scale[:, None] * eps  # (B, S, K)
            logits = self.logits(z.reshape(b * s, -1), y.repeat_interleave(s)).reshape(b, s, -1)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, x[:, None].expand_as(logits),
                                                           reduction="none").sum(-1)
            log_prior = -0.5 * z.pow(2).sum(-1)  # the 2π terms of prior and posterior cancel
            log_q = (-0.5 * eps.pow(2) - scale[:, None].log()).sum(-1)
            per_label.append(torch.logsumexp(log_px_z + log_prior - log_q, dim=1) - math.log(s))  # log p(x | y)
        return {"log_likelihood": torch.logsumexp(torch.stack(per_label, 1), dim=1) - math.log(LABELS)}

    def sample(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Draws from the prior with the digits cycling 0, 1, ..., 9 along the batch (the service draws each row's
        digit itself: `sample_digits`)."""
        y = torch.arange(len(eps), device=eps.device) % LABELS
        return self.sample_digits(y, eps, torch.zeros(len(eps), device=eps.device))

    def digit_density(self) -> ClassDensity:
        """The density fitted to the training images' posterior means given their digits (the aggregate posterior
        of each digit, lvm.classes) when the artifact has one, else the prior N(0, I), every digit's."""
        if self.class_density is not None:
            return self.class_density
        return ClassDensity.standard(self.latent_dim).to(self.prior_loc.device)

    def sample_digits(self, y: Tensor, eps: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Rows with a digit: z from digit_density() given it (eps itself under the prior). Rows with y = -1: z = eps
        from the prior and the digit floor(10 u)."""
        labelled = y >= 0
        digits = torch.where(labelled, y, (u * LABELS).long().clamp(max=LABELS - 1))
        z = eps
        if self.class_density is not None and bool(labelled.any()):
            z = torch.where(labelled[:, None], self.class_density.sample(digits, eps, u), eps)
        return z, torch.sigmoid(self.logits(z, digits))
