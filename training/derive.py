"""`python -m training derive PATH [--add STEP ...]`: a new version of an existing artifact with the same weights and
some of its extra files (re)computed by the steps below; the source's other files are carried over byte for byte.
Nothing is refitted, so the metrics carry over unchanged; the manifest says where it came from in `derived_from`.

Steps, run in this order (each is a function of the source, the data and the folder being written):
    embedding  the test set's posterior means (lvm.embedding)
    classes    the class-conditional latent density fitted to the training set's posterior means (lvm.classes,
               training/classes.py; a conditional model's given each image's digit) and report/digits.png
    reference  the validation split's scores behind /score's percentile and outlier rule (lvm.reference)
    report     every report PNG, redrawn
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lvm
from lvm.networks import LatentModel

# Keys write_artifact fills in itself; every other key of the source manifest is carried over as it is.
_FILLED_IN = ("format_version", "name", "version", "created_at", "input_shape", "files")


@dataclass
class Derivation:
    """What the steps share: the source artifact, its model (the steps may attach a density), the data, and the
    manifest of the new version (steps add their records)."""

    source: lvm.Artifact
    model: LatentModel
    data: object  # training.data.MNIST
    manifest: dict


def _embedding(d: Derivation, folder: Path) -> list[str]:
    from lvm.embedding import EMBEDDING_FILE, compute_embedding, write_embedding

    write_embedding(folder, compute_embedding(d.model, d.data.test.x, d.data.test.y))
    return [EMBEDDING_FILE]


def _classes(d: Derivation, folder: Path) -> list[str]:
    from lvm.classes import CLASSES_FILE, write_classes
    from training.classes import FITTED_TO, class_density_for
    from training.report import digits

    train, valid = d.data.train, d.data.valid
    d.model.class_density, d.manifest["class_density"] = class_density_for(d.model, train.x, train.y, valid.x,
                                                                            valid.y)
    write_classes(folder, d.model.class_density, FITTED_TO)
    (folder / "report").mkdir(exist_ok=True)
    digits(d.model, folder / "report" / "digits.png", title=d.source.name)
    return [CLASSES_FILE, "report/digits.png"]


def _reference(d: Derivation, folder: Path) -> list[str]:
    from lvm.reference import REFERENCE_FILE

    write_reference_of(d.model, d.data, folder)
    return [REFERENCE_FILE]


def _report(d: Derivation, folder: Path) -> list[str]:
    from training.report import write_report

    paths = write_report(d.model, d.data.test.x, d.data.test.y, folder / "report", d.source.name)
    return [p.relative_to(folder).as_posix() for p in paths]


STEPS: dict[str, Callable[[Derivation, Path], list[str]]] = {
    "embedding": _embedding, "classes": _classes, "reference": _reference, "report": _report}

# The score reference's images: never fitted on (the models fit on data.train; the validation split only picks the
# epoch), and disjoint from the test set, which stays held back for measuring the outlier rule (docs/score.md).
REFERENCE_IMAGES = "mnist validation split (training images held out of fitting)"


def write_reference_of(model: LatentModel, data, folder: Path) -> None:
    """The score reference of `model` on the validation split, into folder (lvm.reference)."""
    from lvm.reference import compute_reference, write_reference

    write_reference(folder, compute_reference(model, data.valid.x, REFERENCE_IMAGES))


def derive(path: Path, data_dir: Path | None, artifacts_dir: Path | None = None,
           steps: tuple[str, ...] = tuple(STEPS), reason: str | None = None) -> Path:
    """Writes the next version of the artifact at path (under artifacts_dir, default its own root) with `steps`
    run and the source's other files copied; returns the new folder."""
    from training.data import load_mnist
    from training.pipeline import software

    unknown = sorted(set(steps) - STEPS.keys())
    if unknown or not steps:
        raise ValueError(f"derive steps must be among {', '.join(STEPS)}, got {', '.join(unknown) or 'none'}")
    source = lvm.load_artifact(Path(path))
    model = source.build()
    split = source.manifest["data"].get("split", {})
    data = load_mnist(data_dir, valid_size=split.get("valid", 5000), split_seed=split.get("seed", 0))
    manifest = {k: v for k, v in source.manifest.items() if k not in _FILLED_IN}
    ordered = [name for name in STEPS if name in steps]
    manifest["derived_from"] = {
        "name": source.name,
        "version": source.version,
        "weights_sha256": source.manifest["files"][lvm.artifact.WEIGHTS_FILE],
        "reason": reason or f"same weights and metrics; recomputed: {', '.join(ordered)}; other files carried over",
        "steps": ordered,
        "software": software(),
    }
    derivation = Derivation(source, model, data, manifest)

    def write_extras(folder: Path) -> None:
        written = set()
        for name in ordered:
            written.update(STEPS[name](derivation, folder))
        carried = [rel for rel in source.manifest["files"] if rel not in written and rel != lvm.artifact.WEIGHTS_FILE]
        for rel in carried:
            target = folder / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.path / rel, target)

    root = Path(artifacts_dir) if artifacts_dir is not None else source.path.parent.parent
    return lvm.write_artifact(root, source.name, model, manifest, write_extras)
