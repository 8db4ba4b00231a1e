"""The epoch loop shared by the AE and the VAE: seeded shuffling, a tqdm bar with the running loss on stderr,
validation every epoch, the best epoch's weights kept, the learning rate decayed once per epoch.

Each kind supplies an Objective (its optimiser step and its validation figure); this module knows no model.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from training.config import AEConfig


class Objective(Protocol):
    def step(self, x: Tensor, epoch: int) -> float:
        """One optimiser step on batch x; returns the batch's summed loss (nats)."""

    def end_epoch(self) -> float:
        """Decays the learning rate; returns the rate the next epoch uses."""

    def validate(self, x: Tensor) -> float:
        """The deterministic model-selection figure on the validation images, per image (lower is better)."""


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    wall_time_s: float = 0.0
    device: str = "cpu"  # where the fit ran

    def to_dict(self) -> dict:
        return {
            "epochs_run": len(self.train_loss),
            "best_epoch": self.best_epoch,
            "best_valid_loss": min(self.valid_loss) if self.valid_loss else None,
            "train_loss_per_epoch": [round(v, 4) for v in self.train_loss],
            "valid_loss_per_epoch": [round(v, 4) for v in self.valid_loss],
            "wall_time_s": round(self.wall_time_s, 1),
            "device": self.device,
        }


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (Pyro draws from torch), so a CPU fit is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'auto'; CUDA falls back to the CPU with a warning when there is none (unlike the service,
    which refuses to start on a device it cannot use)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device {name!r} asked for but CUDA is not available; training on the CPU", stacklevel=2)
        name = "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {name!r}")
    return torch.device(name)


def train_epoch(objective: Objective, x: Tensor, epoch: int, config: AEConfig, generator: torch.Generator) -> float:
    """One pass over x in a seeded random order; returns the mean training loss per image."""
    order = torch.randperm(len(x), generator=generator).to(x.device)
    total, seen = 0.0, 0
    bar = tqdm(range(0, len(x), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr,
               leave=False, mininterval=1.0)
    for i, start in enumerate(bar):
        xb = x[order[start : start + config.batch_size]]
        total += objective.step(xb, epoch)
        seen += len(xb)
        if i % 25 == 0:
            bar.set_postfix(loss=f"{total / seen:.2f}")
    return total / seen


def fit(model: nn.Module, objective: Objective, x_train: Tensor, x_valid: Tensor, config: AEConfig) -> History:
    """Runs config.epochs epochs and leaves the model holding the weights of the epoch with the best validation."""
    generator = torch.Generator().manual_seed(config.seed)
    history, best_state, started = History(device=str(x_train.device)), None, time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        history.train_loss.append(train_epoch(objective, x_train, epoch, config, generator))
        model.eval()
        with torch.no_grad():
            valid = objective.validate(x_valid)
        if not math.isfinite(valid):
            raise FloatingPointError(f"validation loss is {valid} at epoch {epoch + 1}; lower the learning rate")
        history.valid_loss.append(valid)
        lr = objective.end_epoch()
        if best_state is None or valid < min(history.valid_loss[:-1]):
            history.best_epoch = epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        tqdm.write(f"epoch {epoch + 1}/{config.epochs}: train {history.train_loss[-1]:.3f} valid {valid:.3f} "
                   f"(best {history.best_epoch}) next lr {lr:.2e}", file=sys.stderr)
    model.load_state_dict(best_state)
    model.eval()
    history.wall_time_s = time.perf_counter() - started
    return history
