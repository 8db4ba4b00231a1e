"""The frozen hyper-parameter records of each model kind; each artifact's manifest holds the one it was made with.

The defaults are the recipes that meet the quality bars of the committed K = 2 artifacts (docs/artifacts.md, Training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lvm.architecture import check_sizes
from lvm.networks import ACTIVATIONS


MAX_LR = 1.0  # Adam's step size; anything larger only diverges


@dataclass(frozen=True)
class PPCAConfig:
    latent_dim: int = 2
    seed: int = 0  # seeds the train/valid split; the fit itself is closed form
    valid_size: int = 5000

    def __post_init__(self) -> None:
        _check_common(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AEConfig:
    latent_dim: int = 2
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "softplus"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    final_lr_ratio: float = 0.01  # cosine decay, per epoch, from lr to lr * final_lr_ratio
    seed: int = 0
    valid_size: int = 5000
    num_threads: int = 2
    device: str = "auto"  # cuda when available, else cpu; the manifest records the one used

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden:
            raise ValueError("hidden widths must name at least one layer")
        check_sizes(self.latent_dim, self.hidden)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("epochs", "batch_size", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        # Finite and bounded: inf, nan or 1e30 would pass "> 0" and end, epochs later, in an optimiser's overflow.
        if not 0 < self.lr <= MAX_LR or not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"lr must be in (0, {MAX_LR:g}] and final_lr_ratio in (0, 1], got {self.lr} and "
                             f"{self.final_lr_ratio}")

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


@dataclass(frozen=True)
class VAEConfig(AEConfig):
    kl_warmup_epochs: int = 0  # the KL term's weight rises linearly from 1/(n+1) to 1 over this many epochs
    iwae_samples: int = 1000  # importance samples per image for the log p(x) estimate
    iwae_images: int = 1000  # the first this-many test images get the estimate
    elbo_seed: int = 1234  # the noise of the deterministic ELBO evaluation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_warmup_epochs < 0 or self.iwae_samples < 1 or self.iwae_images < 1:
            raise ValueError("kl_warmup_epochs must be >= 0, iwae_samples and iwae_images >= 1")


@dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    """The conditional VAE's: the VAE's fields (its IWAE figure is not computed: the ELBO given the label is)."""



def _check_common(config: PPCAConfig | AEConfig) -> None:
    check_sizes(config.latent_dim)
    if config.valid_size < 1:
        raise ValueError(f"valid_size must be at least 1, got {config.valid_size}")
