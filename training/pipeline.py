"""From a config to a new artifact version and back: `fit_and_export` trains one kind, fits its class density,
measures it on the full test set and writes it with lvm.write_artifact; `evaluate_artifact` recomputes the test figures of an existing version."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

import lvm
from lvm.classes import write_classes
from lvm.embedding import compute_embedding, write_embedding
from lvm.networks import LatentModel
from training.classes import FITTED_TO, class_density_for
from training.derive import write_reference_of
from training.config import AEConfig, PPCAConfig
from training.data import MNIST, load_mnist
from training.kinds import training_kind
from training.metrics import evaluate_model
from training.report import write_report

@dataclass(frozen=True)
class Run:
    """What one fit produced, before it is written."""

    model: LatentModel
    config: PPCAConfig | AEConfig
    record: dict  # epochs run, best epoch, wall time, loss curves


def train(kind: str, config: PPCAConfig | AEConfig, data: MNIST) -> Run:
    """Fits one model of `kind` on data.train, selecting by data.valid (training.kinds says how, per kind); the model
    then gets its class-conditional density (training/classes.py; the cvae's is its aggregate posterior per digit)."""
    model, record = training_kind(kind).fit(data, config)
    model.class_density, record["class_density"] = class_density_for(
        model, data.train.x, data.train.y, data.valid.x, data.valid.y)
    return Run(model, config, record)


def measure(run: Run, data: MNIST) -> dict:
    """The manifest's `metrics`: every test figure of the model (classical PCA's MSE beside PPCA's among them)."""
    return evaluate_model(run.model, data.test.x, run.config.to_dict(), data.test.y, data.train.x)


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
    """Writes the run as the next version of `name` (weights, manifest, report PNGs, the test-set embedding, the class
    density and the score reference) and returns its folder."""
    record = dict(run.record)
    class_density = record.pop("class_density", None)
    manifest = {  # the model's kind, likelihood and architecture are added by write_artifact from the model itself
        "training": {"config": run.config.to_dict(), "seed": run.config.seed, **record},
        "data": data.describe(),
        "metrics": metrics,
        "software": software(),
        **({"class_density": class_density} if class_density is not None else {}),
    }

    def write_extras(folder: Path) -> None:
        write_report(run.model, data.test.x, data.test.y, folder / "report", name)
        write_embedding(folder, compute_embedding(run.model, data.test.x, data.test.y))
        if run.model.class_density is not None:
            write_classes(folder, run.model.class_density, FITTED_TO)
        write_reference_of(run.model, data, folder)

    return lvm.write_artifact(Path(artifacts_dir), name, run.model, manifest, write_extras)


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
    n = len(data.test.x) if test_images is None else test_images
    return evaluate_model(model, data.test.x[:n], config, data.test.y[:n], data.train.x)
