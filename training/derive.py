"""`python -m training derive PATH`: a new version of an existing artifact with the same weights and freshly written
extras (training/extras.py: report PNGs, test-set embedding, score reference). Nothing is refitted, so the metrics
carry over unchanged; the manifest says where it came from in `derived_from`."""

from __future__ import annotations

from pathlib import Path

import lvm
from training.data import load_mnist
from training.extras import STEPS, Context, Step, writer
from training.pipeline import software

REASON = "same weights and metrics; writes the extras again (report, test-set embedding, score reference)"
# Keys write_artifact fills in itself; every other key of the source manifest is carried over as it is.
_FILLED_IN = ("format_version", "name", "version", "created_at", "input_shape", "files")


def derive(path: Path, data_dir: Path | None, artifacts_dir: Path | None = None, reason: str = REASON,
           steps: tuple[Step, ...] = STEPS) -> Path:
    """Writes the next version of the artifact at path (under artifacts_dir, default its own root) with the extras
    `steps` write, and returns it."""
    source = lvm.load_artifact(Path(path))
    model = source.build()
    split = source.manifest["data"].get("split", {})
    data = load_mnist(data_dir, valid_size=split.get("valid", 5000), split_seed=split.get("seed", 0))
    manifest = {k: v for k, v in source.manifest.items() if k not in _FILLED_IN}
    manifest["derived_from"] = {
        "name": source.name,
        "version": source.version,
        "weights_sha256": source.manifest["files"][lvm.artifact.WEIGHTS_FILE],
        "reason": reason,
        "software": software(),
    }
    root = Path(artifacts_dir) if artifacts_dir is not None else source.path.parent.parent
    return lvm.write_artifact(root, source.name, model, manifest, writer(Context(model, data, source.name), steps))
