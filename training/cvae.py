"""The conditional VAE with Pyro: model p(z) p(x | z, y) with an N(0, I) prior whatever the digit and a Bernoulli
likelihood on the continuous pixels, guide q(z | x, y), both given the one-hot digit; trained by SVI on
TraceMeanField_ELBO (analytic KL), Adam with cosine decay, as training/vae.py trains the VAE. The network is lvm's
CVAE, so the artifact needs no Pyro to be served."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor

from lvm.networks import CVAE
from training.config import CVAEConfig
from training.loop import History, fit, pick_device, seed_everything
from training.metrics import mean_negative_elbo_labelled
from training.vae import cosine_svi


class CVAEObjective:
    """The loop's Objective (training/loop.py). The loop hands over rows [x | y] (B, 785), the digit as the last
    column, so that the shared epoch loop shuffles images and labels together."""

    def __init__(self, model: CVAE, config: CVAEConfig) -> None:
        self.net, self.config = model, config
        self.scheduler, self.svi = cosine_svi(self.model, self.guide, config)
        self._lr = config.lr

    def model(self, x: Tensor, y: Tensor, kl_weight: float = 1.0) -> None:
        pyro.module("decoder", self.net.decoder)
        batch, k = x.shape[0], self.net.latent_dim
        with pyro.plate("data", batch):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample("z", dist.Normal(x.new_zeros(batch, k), x.new_ones(batch, k)).to_event(1))
            # Bernoulli on continuous pixels: the log-likelihood x log p + (1 − x) log(1 − p), not a valid support.
            pyro.sample("x", dist.Bernoulli(logits=self.net.logits(z, y), validate_args=False).to_event(1), obs=x)

    def guide(self, x: Tensor, y: Tensor, kl_weight: float = 1.0) -> None:
        pyro.module("encoder", self.net.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.net.encode_labelled(x, y)
            with poutine.scale(scale=kl_weight):
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))

    def kl_weight(self, epoch: int) -> float:
        warmup = self.config.kl_warmup_epochs
        return 1.0 if epoch >= warmup else (epoch + 1) / (warmup + 1)

    def step(self, rows: Tensor, epoch: int) -> float:
        x, y = split_rows(rows)
        return float(self.svi.step(x, y, self.kl_weight(epoch)))

    def end_epoch(self) -> float:
        self.scheduler.step()
        optimizers = list(self.scheduler.optim_objs.values())
        return optimizers[0].get_last_lr()[0] if optimizers else self._lr

    def validate(self, rows: Tensor) -> float:
        x, y = split_rows(rows)
        return mean_negative_elbo_labelled(self.net, x, y, seed=self.config.elbo_seed)


def join_rows(x: Tensor, y: Tensor) -> Tensor:
    """[x | y] (N, 785) float32: exact for digits 0-9."""
    return torch.cat([x, y.to(x.dtype)[:, None]], dim=1)


def split_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    return rows[:, :-1], rows[:, -1].long()


def train_cvae(x_train: Tensor, y_train: Tensor, x_valid: Tensor, y_valid: Tensor,
               config: CVAEConfig) -> tuple[CVAE, History]:
    """Fits a conditional VAE from a fixed seed; returns it on the CPU in eval mode."""
    seed_everything(config.seed)
    pyro.set_rng_seed(config.seed)
    torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    model = CVAE(config.latent_dim, list(config.hidden), config.activation).to(device)
    history = fit(model, CVAEObjective(model, config), join_rows(x_train, y_train).to(device),
                         join_rows(x_valid, y_valid).to(device), config)
    return model.cpu().eval(), history


def train(data, config: CVAEConfig) -> tuple[CVAE, dict]:
    """The kind registry's entry point (training.kinds)."""
    model, history = train_cvae(data.train.x, data.train.y, data.valid.x, data.valid.y, config)
    return model, history.to_dict()
