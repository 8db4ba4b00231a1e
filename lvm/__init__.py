"""Shared by training and the service: the network definitions and the artifact format. Torch only."""

from lvm.architecture import build_model, check_sizes
from lvm.artifact import (Artifact, ArtifactError, load_artifact, parse_version, read_manifest, read_pin, scan,
                          write_artifact)
from lvm.networks import CVAE, INPUT_DIM, KINDS, LatentModel, MLPModel, PPCA, model_class

__all__ = [
    "Artifact",
    "CVAE",
    "ArtifactError",
    "INPUT_DIM",
    "KINDS",
    "LatentModel",
    "MLPModel",
    "PPCA",
    "build_model",
    "check_sizes",
    "load_artifact",
    "model_class",
    "parse_version",
    "read_manifest",
    "read_pin",
    "scan",
    "write_artifact",
]
