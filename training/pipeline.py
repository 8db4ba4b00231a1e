"""From a config to a new artifact version and back: `fit_and_export` trains one kind, measures it on the full test
set and writes it with lvm.write_artifact; `evaluate_artifact` recomputes the test figures of an existing version."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

import lvm
from lvm.networks import LatentModel
from training.config import AEConfig, PPCAConfig
from training.data import MNIST, load_mnist
from training.extras import Context, writer
from training.metrics import classical_pca_mse, evaluate_model

@dataclass(frozen=True)
class Run:
    """What one fit produced, before it is written."""

    model: LatentModel
    config: PPCAConfig | AEConfig
    record: dict  # epochs run, best epoch, wall time, loss curves


def train(kind: str, config: PPCAConfig | AEConfig, data: MNIST) -> Run:
    """Fits one model of `kind` on data.train, selecting by data.valid; imports only what the kind needs."""
    if kind == "ppca":
        from training.pca import train_ppca

        model, record = train_ppca(data.train.x, config)
        return Run(model, config, record)
    if kind == "ae":
        from training.ae import train_ae

        model, history = train_ae(data.train.x, data.valid.x, config)
    elif kind == "vae":
        from training.vae import train_vae

        model, history = train_vae(data.train.x, data.valid.x, config)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(lvm.KINDS)}")
    return Run(model, config, history.to_dict())


def measure(run: Run, data: MNIST) -> dict:
    """The manifest's `metrics`: every test figure of the model, plus classical PCA's MSE beside PPCA's."""
    metrics = evaluate_model(run.model, data.test.x, run.config.to_dict())
    if run.model.kind == "ppca":
        metrics["classical_pca_mse"] = classical_pca_mse(data.train.x, data.test.x, run.model.latent_dim)
    return metrics


def software() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import pyro

        versions["pyro"] = pyro.__version__
    except ImportError:
        versions["pyro"] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
        versions["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    return versions


def export(run: Run, data: MNIST, metrics: dict, artifacts_dir: Path, name: str) -> Path:
    """Writes the run as the next version of `name` (weights, manifest, the extras of training/extras.py) and returns
    its folder."""
    manifest = {  # the model's kind, likelihood and architecture are added by write_artifact from the model itself
        "training": {"config": run.config.to_dict(), "seed": run.config.seed, **run.record},
        "data": data.describe(),
        "metrics": metrics,
        "software": software(),
    }
    return lvm.write_artifact(Path(artifacts_dir), name, run.model, manifest, writer(Context(run.model, data, name)))


def fit_and_export(kind: str, config: PPCAConfig | AEConfig, data_dir: Path | None, artifacts_dir: Path,
                   name: str) -> Path:
    """Loads the data, fits, measures on the full test set, writes the artifact; returns the new version's folder."""
    lvm.artifact.check_destination(artifacts_dir, name)  # before any training: a bad name or folder fails now
    data = load_mnist(data_dir, valid_size=config.valid_size, split_seed=config.seed)
    run = train(kind, config, data)
    return export(run, data, measure(run, data), artifacts_dir, name)


def evaluate_artifact(path: Path, data_dir: Path | None, test_images: int | None = None) -> dict:
    """Recomputes the test figures of the artifact at path (on the first test_images test images, or all)."""
    artifact = lvm.load_artifact(Path(path))
    split = artifact.manifest["data"].get("split", {})
    data = load_mnist(data_dir, valid_size=split.get("valid", 5000), split_seed=split.get("seed", 0))
    model = artifact.build()
    config = dict(artifact.manifest["training"].get("config", {}))
    x = data.test.x if test_images is None else data.test.x[:test_images]
    metrics = evaluate_model(model, x, config)
    if model.kind == "ppca":
        metrics["classical_pca_mse"] = classical_pca_mse(data.train.x, x, model.latent_dim)
    return metrics
