"""`python -m training derive PATH`: a new version of an existing artifact with the same weights, its test-set
embedding (lvm.embedding) and freshly drawn report PNGs. Nothing is refitted, so the metrics carry over unchanged;
the manifest says where it came from in `derived_from`."""

from __future__ import annotations

from pathlib import Path

import lvm
from lvm.embedding import compute_embedding, write_embedding
from training.data import load_mnist
from training.pipeline import software
from training.report import write_report

REASON = "same weights and metrics; adds the test-set embedding and redraws the report"
# Keys write_artifact fills in itself; every other key of the source manifest is carried over as it is.
_FILLED_IN = ("format_version", "name", "version", "created_at", "input_shape", "files")


def derive(path: Path, data_dir: Path | None, artifacts_dir: Path | None = None, reason: str = REASON) -> Path:
    """Writes the next version of the artifact at path (under artifacts_dir, default its own root) and returns it."""
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

    def write_extras(folder: Path) -> None:
        write_report(model, data.test.x, data.test.y, folder / "report", source.name)
        write_embedding(folder, compute_embedding(model, data.test.x, data.test.y))

    root = Path(artifacts_dir) if artifacts_dir is not None else source.path.parent.parent
    return lvm.write_artifact(root, source.name, model, manifest, write_extras)
