"""The reference distribution behind `/score`'s percentile and outlier verdict: compute, write, read, and the rule.

    <root>/<name>/<version>/reference.safetensors
        one float64 (N,) tensor per feature: the model's score terms (`log_likelihood`, and for the VAE `elbo`,
        `reconstruction`, `kl`) of N images the model was not fitted on, plus `complexity` and `contrast`
        metadata: {"reference": JSON of REFERENCE_INFO's keys: images, samples, seed, method, false_positive_rate}
        (one key: safetensors orders several at random, and the bytes with them)

Listed with its SHA-256 in the manifest's `files` like the embedding; an artifact without it still serves, with no
percentile or verdict. `OutlierRule` is numpy only, so the service applies it without torch; why this rule, and
what its numbers measured, is in docs/score.md.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from torch import Tensor

from lvm.artifact import ArtifactError, listed_file
from lvm.networks import LatentModel

REFERENCE_FILE = "reference.safetensors"
# The default rule, its flag rate on data like the reference's, and the importance samples its scores used.
METHOD = "tails"
FALSE_POSITIVE_RATE = 0.01
SAMPLES = 100
SEED = 0
METHODS = ("likelihood", "typicality", "complexity", "features", "mahalanobis", "min-tails", "tails")
# The default rule's tests: each feature's atypical tail and its share of the false-positive rate (a weighted
# Bonferroni test: the weights sum to 1). Most goes to the likelihood, raw and against what the image's complexity
# predicts (`residual`); the rest guards against images too simple for their likelihood and against faint ones.
# Chosen among the rules in BENCHMARKS.md's "outliers" table, then checked on families no rule was chosen on.
TAILS = {"log_likelihood": ("low", 0.45), "residual": ("low", 0.45), "adjusted": ("both", 0.05),
         "contrast": ("both", 0.05)}
_IMAGES_PER_CHUNK = 500
# `contrast` is the mean of this many brightest pixels: as sharp as the maximum against faint images, without
# flagging a digit whose brightest pixel is 254/255 (a tenth of MNIST's are).
_CONTRAST_PIXELS = 10


def complexity(x: np.ndarray) -> np.ndarray:
    """A lossless compressor's length of each image (B, 784) in [0, 1], in nats: zlib at level 9 on its 8-bit
    pixels. The complexity estimate of Serrà et al. (2020), what a likelihood has to be judged against."""
    pixels = np.clip(np.rint(np.asarray(x, np.float64) * 255), 0, 255).astype(np.uint8)
    return np.array([8 * len(zlib.compress(row.tobytes(), 9)) * math.log(2) for row in pixels], np.float64)


def features(x: np.ndarray, terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every feature a rule may read, (B,) float64 each: the terms, `complexity`, `contrast` (the brightest pixels),
    and `adjusted` = log_likelihood + complexity (minus Serrà's S: how much better the model codes the image than a
    generic compressor)."""
    out = {k: np.asarray(v, np.float64).reshape(-1) for k, v in terms.items()}
    out["complexity"] = complexity(x)
    out["contrast"] = np.sort(np.asarray(x, np.float64), axis=1)[:, -_CONTRAST_PIXELS:].mean(axis=1)
    out["adjusted"] = out["log_likelihood"] + out["complexity"]
    return out


def compute_terms(model: LatentModel, x: Tensor, samples: int = SAMPLES, seed: int = SEED) -> dict[str, np.ndarray]:
    """model.score_terms of the images x (N, 784) in chunks, with noise from one generator seeded by `seed`."""
    g = torch.Generator().manual_seed(seed)
    parts: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for xb in x.split(_IMAGES_PER_CHUNK):
            eps = torch.randn(len(xb), samples, model.latent_dim, generator=g)
            parts.append(model.score_terms(xb, eps))
    return {k: torch.cat([p[k] for p in parts]).double().numpy() for k in parts[0]}


@dataclass(frozen=True)
class Reference:
    features: dict[str, np.ndarray]  # name -> (N,) float64
    info: dict  # images, samples, seed, method, false_positive_rate

    def rule(self, method: str | None = None, false_positive_rate: float | None = None) -> OutlierRule:
        return OutlierRule(self.features, method or self.info["method"],
                           false_positive_rate or self.info["false_positive_rate"])


def compute_reference(model: LatentModel, x: Tensor, images: str, samples: int = SAMPLES, seed: int = SEED,
                      method: str = METHOD, false_positive_rate: float = FALSE_POSITIVE_RATE) -> Reference:
    """The reference of the images x (N, 784), described by `images` (which images, and that the model never saw
    them)."""
    feats = features(x.numpy(), compute_terms(model, x, samples, seed))
    feats.pop("adjusted")  # derived again on reading
    info = {"images": images, "count": len(x), "samples": samples, "seed": seed, "method": method,
            "false_positive_rate": false_positive_rate}
    return Reference(feats, info)


def write_reference(folder: Path, reference: Reference) -> Path:
    """Writes folder/reference.safetensors (call it from write_artifact's write_extras) and returns its path."""
    path = Path(folder) / REFERENCE_FILE
    tensors = {k: np.ascontiguousarray(v, np.float64) for k, v in reference.features.items()}
    safetensors.numpy.save_file(tensors, path, metadata={"reference": json.dumps(reference.info, sort_keys=True)})
    return path


def has_reference(manifest: dict) -> bool:
    return REFERENCE_FILE in manifest.get("files", {})


def read_reference(path: Path, manifest: dict) -> Reference:
    """Reads the reference of the artifact at path, checking its SHA-256 against the manifest and its contents;
    raises ArtifactError when it is absent or does not fit."""
    path = Path(path)
    file = listed_file(path, manifest, REFERENCE_FILE)
    try:
        with safetensors.safe_open(file, framework="np") as f:
            info = json.loads((f.metadata() or {}).get("reference", "null"))
        tensors = safetensors.numpy.load_file(file)
    except Exception as exc:  # safetensors and json raise their own error types for malformed files
        raise ArtifactError(f"{path}: {REFERENCE_FILE} cannot be read ({exc})") from None
    if not isinstance(info, dict) or info.get("method") not in METHODS \
            or not 0 < info.get("false_positive_rate", 0) < 1:
        raise ArtifactError(f"{path}: {REFERENCE_FILE} has no valid 'reference' metadata (method, false_positive_rate)")
    sizes = {v.shape for v in tensors.values()}
    if not {"log_likelihood", "complexity", "contrast"} <= set(tensors) or len(sizes) != 1 \
            or len(next(iter(sizes))) != 1 or next(iter(sizes))[0] < 2:
        raise ArtifactError(f"{path}: {REFERENCE_FILE} must hold log_likelihood, complexity and contrast, (N,) each,"
                            f" N >= 2")
    feats = {k: v.astype(np.float64) for k, v in tensors.items()}
    if not all(np.isfinite(v).all() for v in feats.values()):
        raise ArtifactError(f"{path}: {REFERENCE_FILE} holds values that are not finite")
    return Reference(feats, info)


def _tail(column: np.ndarray, values: np.ndarray, side: str = "both") -> np.ndarray:
    """The empirical tail probability of each value against a sorted reference column, in (0, 1]: of the lower tail
    ("low"), the upper ("high"), or two-sided ("both")."""
    n = len(column)
    below = np.searchsorted(column, values, side="right") + 1  # 1 + reference values <= v
    above = n - np.searchsorted(column, values, side="left") + 1  # 1 + reference values >= v
    count = {"low": below, "high": above, "both": 2 * np.minimum(below, above)}[side]
    return np.minimum(1.0, count / (n + 1))


class OutlierRule:
    """Percentile and outlier verdict of images from their score features, against a reference set.

    Each method maps an image to an atypicality (larger: less typical); the percentile is the share of the reference
    whose atypicality is larger than the image's, and an image is an outlier when its percentile is below
    100 x false_positive_rate, so that images like the reference's are flagged at that rate.
    - likelihood: -log_likelihood (the raw score; blank images pass)
    - typicality: two-sided on log_likelihood (Nalisnick et al. 2019)
    - complexity: Serrà et al.'s S = -log_likelihood - complexity, one-sided
    - features: the smallest two-sided tail probability over every feature (in the spirit of DoSE, Morningstar et
      al. 2021)
    - mahalanobis: the Mahalanobis distance of the standardised features from the reference's mean
    - min-tails: the smallest tail probability of TAILS' features but `residual`, each on its atypical side, with
      equal weights (the default until 2026-12-03)
    - tails (the default): the smallest weighted tail probability of TAILS' features, p / weight, each on its
      atypical side; `residual` is log_likelihood less its least-squares line on complexity over the reference
    """

    def __init__(self, reference: dict[str, np.ndarray], method: str = METHOD,
                 false_positive_rate: float = FALSE_POSITIVE_RATE) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        self.method, self.false_positive_rate = method, float(false_positive_rate)
        ref = dict(reference)
        ref["adjusted"] = ref["log_likelihood"] + ref["complexity"]
        self.names = sorted(ref)
        # log_likelihood ~ a + b complexity over the reference: what an image's complexity predicts.
        design = np.stack([np.ones_like(ref["complexity"]), ref["complexity"]], axis=1)
        self._line = np.linalg.lstsq(design, ref["log_likelihood"], rcond=None)[0]
        self._columns = {k: np.sort(v) for k, v in ref.items()}
        self._columns["residual"] = np.sort(self._residual(ref))
        matrix = np.stack([ref[k] for k in self.names], axis=1)
        self._mean, self._std = matrix.mean(0), matrix.std(0) + 1e-12
        standard = (matrix - self._mean) / self._std
        self._precision = np.linalg.pinv(np.cov(standard, rowvar=False))
        self._reference = np.sort(self._atypicality(ref))

    def _residual(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        return feats["log_likelihood"] - (self._line[0] + self._line[1] * feats["complexity"])

    @property
    def count(self) -> int:
        return len(self._reference)

    def _atypicality(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        if self.method == "likelihood":
            return -feats["log_likelihood"]
        if self.method == "typicality":
            return -np.log(_tail(self._columns["log_likelihood"], feats["log_likelihood"]))
        if self.method == "complexity":
            return -feats["adjusted"]
        if self.method == "features":
            return -np.log(np.min([_tail(self._columns[k], feats[k]) for k in self.names], axis=0))
        if self.method == "min-tails":
            return -np.log(np.min([_tail(self._columns[k], feats[k], side) for k, (side, _) in TAILS.items()
                                   if k != "residual"], axis=0))
        if self.method == "tails":
            feats = {**feats, "residual": self._residual(feats)}
            return np.max([np.log(weight) - np.log(_tail(self._columns[k], feats[k], side))
                           for k, (side, weight) in TAILS.items()], axis=0)
        standard = (np.stack([feats[k] for k in self.names], axis=1) - self._mean) / self._std
        return np.einsum("bi,ij,bj->b", standard, self._precision, standard)

    def assess(self, x: np.ndarray, terms: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(percentile (B,) float64 in 0-100, outlier (B,) bool) of the images x (B, 784) in [0, 1] with their
        score terms (B,) each, as model.score_terms returned them."""
        feats = features(x, terms)
        missing = sorted(set(self.names) - set(feats))
        if missing:
            raise ValueError(f"the rule needs the terms {', '.join(missing)}")
        a = self._atypicality(feats)
        percentile = 100.0 * (self.count - np.searchsorted(self._reference, a, side="right")) / self.count
        return percentile, percentile < 100.0 * self.false_positive_rate
