"""Shared by training and the service: the network definitions and the artifact format. Torch only."""

from lvm.artifact import Artifact, ArtifactError, load_artifact, read_manifest, scan, write_artifact
from lvm.networks import INPUT_DIM, KINDS, LatentModel, MLPModel, PPCA, architecture_for, build_model

__all__ = [
    "Artifact",
    "ArtifactError",
    "INPUT_DIM",
    "KINDS",
    "LatentModel",
    "MLPModel",
    "PPCA",
    "architecture_for",
    "build_model",
    "load_artifact",
    "read_manifest",
    "scan",
    "write_artifact",
]
