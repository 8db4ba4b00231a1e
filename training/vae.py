"""The VAE with Pyro: model p(z) p(x|z) with N(0, I) prior and a Bernoulli likelihood on the continuous pixels, guide
q(z|x) from the encoder, trained by SVI on TraceMeanField_ELBO (analytic KL), Adam with cosine decay and an optional
linear warm-up of the KL term. The network itself is lvm's MLPModel, so the artifact needs no Pyro to be served."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO
from torch import Tensor

from lvm.networks import MLPModel
from training.config import VAEConfig
from training.loop import History, fit, pick_device, seed_everything
from training.metrics import mean_negative_elbo


def cosine_svi(model, guide, config) -> tuple[pyro.optim.PyroLRScheduler, SVI]:
    """A fresh parameter store, and SVI of (model, guide) under Adam with a cosine-annealed learning rate (from
    config.lr down to config.lr x config.final_lr_ratio over config.epochs): how every Pyro-trained kind is fitted."""
    pyro.clear_param_store()
    scheduler = pyro.optim.CosineAnnealingLR({
        "optimizer": torch.optim.Adam,
        "optim_args": {"lr": config.lr},
        "T_max": config.epochs,
        "eta_min": config.lr * config.final_lr_ratio,
    })
    return scheduler, SVI(model, guide, scheduler, loss=TraceMeanField_ELBO())


class VAEObjective:
    def __init__(self, model: MLPModel, config: VAEConfig) -> None:
        self.net, self.config = model, config
        self.scheduler, self.svi = cosine_svi(self.model, self.guide, config)
        self._lr = config.lr

    def model(self, x: Tensor, kl_weight: float = 1.0) -> None:
        pyro.module("decoder", self.net.decoder)
        batch, k = x.shape[0], self.net.latent_dim
        with pyro.plate("data", batch):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample("z", dist.Normal(x.new_zeros(batch, k), x.new_ones(batch, k)).to_event(1))
            # Bernoulli on continuous pixels: the log-likelihood x log p + (1 − x) log(1 − p), not a valid support.
            pyro.sample("x", dist.Bernoulli(logits=self.net.logits(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x: Tensor, kl_weight: float = 1.0) -> None:
        pyro.module("encoder", self.net.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.net.encode(x)
            with poutine.scale(scale=kl_weight):
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))

    def kl_weight(self, epoch: int) -> float:
        warmup = self.config.kl_warmup_epochs
        return 1.0 if epoch >= warmup else (epoch + 1) / (warmup + 1)

    def step(self, x: Tensor, epoch: int) -> float:
        return float(self.svi.step(x, self.kl_weight(epoch)))

    def end_epoch(self) -> float:
        self.scheduler.step()
        optimizers = list(self.scheduler.optim_objs.values())
        return optimizers[0].get_last_lr()[0] if optimizers else self._lr

    def validate(self, x: Tensor) -> float:
        return mean_negative_elbo(self.net, x, seed=self.config.elbo_seed)


def train_vae(x_train: Tensor, x_valid: Tensor, config: VAEConfig) -> tuple[MLPModel, History]:
    """Fits a VAE from a fixed seed; returns it on the CPU in eval mode (the prior buffers stay N(0, I))."""
    seed_everything(config.seed)
    pyro.set_rng_seed(config.seed)
    torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    model = MLPModel("vae", config.latent_dim, list(config.hidden), config.activation).to(device)
    history = fit(model, VAEObjective(model, config), x_train.to(device), x_valid.to(device), config)
    return model.cpu().eval(), history


def train(data, config: VAEConfig) -> tuple[MLPModel, dict]:
    """The kind registry's entry point (training.kinds)."""
    model, history = train_vae(data.train.x, data.valid.x, config)
    return model, history.to_dict()
