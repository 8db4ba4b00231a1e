"""The report PNGs of an artifact (report/<file>.png): their names, one list for the writer and the service, and a
reader that checks each against the manifest's SHA-256. Names come from this list, never from a request."""

from __future__ import annotations

from pathlib import Path

from lvm.artifact import listed_file

REPORT_DIR = "report"
# The colour of each digit 0-9, in the report's latent map and the explorer page's live map alike (the page's copy,
# PALETTE in service/static/js/map.js, is checked against this one by tests/unit/test_palette.py): Okabe & Ito's
# colour-blind-safe eight, with Paul Tol's grey and wine for 8 and 9.
DIGIT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999",
                 "#882255")
# What each picture shows; the manifold exists for 2-D models only.
REPORT_FILES = {
    "latent.png": "the test set's posterior means, coloured by digit",
    "reconstructions.png": "test images and their reconstructions from the posterior mean",
    "samples.png": "images decoded from draws of the prior",
    "manifold.png": "the decoded latent grid (2-D models)",
    "digits.png": "images decoded from draws of each digit's latent distribution, one row per digit",
}


def report_files(manifest: dict) -> list[str]:
    """The report PNGs this artifact has, in REPORT_FILES order."""
    listed = manifest.get("files", {})
    return [name for name in REPORT_FILES if f"{REPORT_DIR}/{name}" in listed]


def read_report(path: Path, manifest: dict, name: str) -> bytes:
    """The bytes of report/<name>; raises KeyError for a name outside REPORT_FILES or absent from this artifact, and
    ArtifactError when the file fails its SHA-256 check."""
    if name not in report_files(manifest):
        raise KeyError(name)
    return listed_file(path, manifest, f"{REPORT_DIR}/{name}").read_bytes()
