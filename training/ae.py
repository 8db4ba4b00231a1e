"""The MLP autoencoder: summed BCE-with-logits of the reconstruction from the code, Adam with cosine decay, and a
Gaussian fitted to the training codes so that `sample` has a prior to draw from."""

from __future__ import annotations

import torch
from torch import Tensor

from lvm.networks import MLPModel
from training.config import AEConfig
from training.loop import History, fit, pick_device, seed_everything
from training.metrics import bernoulli_nll, reconstruction_metrics


class AEObjective:
    def __init__(self, model: MLPModel, config: AEConfig) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs, eta_min=config.lr * config.final_lr_ratio
        )

    def step(self, x: Tensor, epoch: int) -> float:
        loss = bernoulli_nll(x, self.model.logits(self.model.encode(x)[0])).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def end_epoch(self) -> float:
        self.scheduler.step()
        return self.scheduler.get_last_lr()[0]

    def validate(self, x: Tensor) -> float:
        return reconstruction_metrics(self.model, x)["bce_per_image"]


@torch.no_grad()
def fit_code_prior(model: MLPModel, x: Tensor, batch_size: int = 2000) -> None:
    """Sets prior_loc / prior_scale_tril to the mean and Cholesky factor of the covariance of the codes of x."""
    z = torch.cat([model.encode(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)]).double()
    loc = z.mean(0)
    cov = torch.atleast_2d(torch.cov(z.T))
    # A jitter of 1e-6 of the mean variance keeps the Cholesky factor defined if the codes collapse onto a line.
    cov = cov + 1e-6 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(loc), dtype=cov.dtype)
    model.prior_loc.copy_(loc.float())
    model.prior_scale_tril.copy_(torch.linalg.cholesky(cov).float())


def train_ae(x_train: Tensor, x_valid: Tensor, config: AEConfig) -> tuple[MLPModel, History]:
    """Fits an autoencoder from a fixed seed; returns it on the CPU in eval mode with its code prior set."""
    seed_everything(config.seed)
    torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    model = MLPModel("ae", config.latent_dim, list(config.hidden), config.activation).to(device)
    history = fit(model, AEObjective(model, config), x_train.to(device), x_valid.to(device), config)
    fit_code_prior(model, x_train.to(device))
    return model.cpu().eval(), history


def train(data, config: AEConfig) -> tuple[MLPModel, dict]:
    """The kind registry's entry point (training.kinds)."""
    model, history = train_ae(data.train.x, data.valid.x, config)
    return model, history.to_dict()
