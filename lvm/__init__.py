"""Shared by training and the service: the network definitions and the artifact format. Torch only."""

from lvm.architecture import build_model, check_sizes
from lvm.artifact import (Artifact, ArtifactError, load_artifact, parse_version, read_manifest, read_pin, scan,
                          write_artifact)
from lvm.networks import INPUT_DIM, KINDS, LatentModel, MLPModel, PPCA

__all__ = [
    "Artifact",
    "ArtifactError",
    "INPUT_DIM",
    "KINDS",
    "LatentModel",
    "MLPModel",
    "PPCA",
    "build_model",
    "check_sizes",
    "load_artifact",
    "parse_version",
    "read_manifest",
    "read_pin",
    "scan",
    "write_artifact",
]
