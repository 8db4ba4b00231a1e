"""The training side of the kind registry: for each kind, its config record, the artifact name it gets by default,
the module that fits it (imported only when a fit needs it: Pyro is loaded for the VAEs only) and its own test
figures. The networks' side (weights, likelihood, architecture) is lvm.networks.KINDS."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from training.config import AEConfig, CVAEConfig, PPCAConfig, VAEConfig
from training.metrics import cvae_figures, ppca_figures, vae_figures


@dataclass(frozen=True)
class TrainingKind:
    config: type
    default_name: str
    module: str  # defines train(data: MNIST, config) -> (model, run record for the manifest)
    figures: Callable[..., dict] | None  # (model, x_test, y_test, config, x_train) -> test figures beyond BCE and MSE

    def fit(self, data, config):
        return importlib.import_module(self.module).train(data, config)


TRAINING_KINDS = {
    "ppca": TrainingKind(PPCAConfig, "pca", "training.pca", ppca_figures),
    "ae": TrainingKind(AEConfig, "ae", "training.ae", None),
    "vae": TrainingKind(VAEConfig, "vae", "training.vae", vae_figures),
    "cvae": TrainingKind(CVAEConfig, "cvae", "training.cvae", cvae_figures),
}


def training_kind(kind: str) -> TrainingKind:
    found = TRAINING_KINDS.get(kind)
    if found is None:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(TRAINING_KINDS)}")
    return found
