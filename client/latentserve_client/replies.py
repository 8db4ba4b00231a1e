"""Replies to results: a 2xx reply's JSON or .npy body as numpy, the parts of a split call joined in order. Which
model and version answered travels with each part, so that parts from two versions are never joined."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentserve_client import inputs
from latentserve_client.errors import BadReply, ServiceError

try:  # parses a reply's numbers about 4 x faster than the standard library, when it happens to be installed
    from orjson import loads as _loads
except ImportError:
    from json import loads as _loads


@dataclass(frozen=True)
class Posterior:
    """q(z | x) for N images: `mean` and `scale` are float32 (N, K); `scale` is None for an autoencoder."""

    mean: np.ndarray
    scale: np.ndarray | None
    model: str
    version: int


@dataclass(frozen=True)
class Scores:
    """How likely N images are under the model (`/score`): each field (N,). `log_likelihood` is in nats (for the
    VAE an importance-weighted estimate with `samples` draws per image, for the AE a reconstruction score, not a
    density); `percentile` (0-100) and `outlier` come from the version's reference set and are None without one;
    `elbo`, `reconstruction` and `kl` are the VAE's terms (None for other kinds)."""

    log_likelihood: np.ndarray
    percentile: np.ndarray | None
    outlier: np.ndarray | None
    elbo: np.ndarray | None
    reconstruction: np.ndarray | None
    kl: np.ndarray | None
    samples: int
    model: str
    version: int


_SCORE_FIELDS = ("log_likelihood", "percentile", "outlier", "elbo", "reconstruction", "kl")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    content: bytes


def read_json(reply: Reply) -> Any:
    return _loads(reply.content)


def read_posterior(reply: Reply) -> Posterior:
    body = _loads(reply.content)
    mean, scale = np.asarray(body["mean"], np.float32), body.get("scale")
    scale = None if scale is None else np.asarray(scale, np.float32)
    if mean.ndim != 2 or (scale is not None and scale.shape != mean.shape):
        raise BadReply(f"the posterior's mean and scale must be (N, K) arrays of one shape; got {mean.shape} and "
                       f"{None if scale is None else scale.shape}", status=reply.status)
    return Posterior(mean, scale, *_served(reply, body["model"], body["version"]))


def read_scores(reply: Reply) -> Scores:
    body = _loads(reply.content)
    fields = {name: None if body.get(name) is None else np.asarray(body[name], bool if name == "outlier" else
                                                                    np.float32) for name in _SCORE_FIELDS}
    model, version = _served(reply, body["model"], body["version"])
    return Scores(**fields, samples=body["samples"], model=model, version=version)


def join_scores(parts: list[Scores]) -> Scores:
    model, version = _one_version(parts)
    fields = {name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
              for name in _SCORE_FIELDS}
    return Scores(**fields, samples=parts[0].samples, model=model, version=version)


def read_images(reply: Reply) -> tuple[np.ndarray, str, int]:
    """(N, 28, 28) float32 pixel means, the model and the version, from a .npy or a JSON reply."""
    if reply.headers.get("content-type", "").startswith(inputs.NPY):
        version = reply.headers["x-model-version"]
        return (inputs.as_images(inputs.read_npy(reply.content)),
                *_served(reply, reply.headers["x-model"], int(version) if version.isascii() and version.isdigit() else version))
    body = _loads(reply.content)
    return inputs.as_images(body["images"]), *_served(reply, body["model"], body["version"])


def _served(reply: Reply, model: object, version: object) -> tuple[str, int]:
    """The model name and version a reply names, checked: a string and a positive integer."""
    if not isinstance(model, str) or isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadReply(f"the reply names model {str(model)[:64]!r} version {str(version)[:32]!r}; expected a name and "
                       "a positive integer", status=reply.status)
    return model, version


def _one_version(parts: list) -> tuple[str, int]:
    served = {(p.model, p.version) if isinstance(p, (Posterior, Scores)) else (p[1], p[2]) for p in parts}
    if len(served) > 1:
        raise ServiceError(f"the parts of one split request were served by different versions {sorted(served)}; "
                           "pin version= to keep a large request on one version", type="mixed_versions")
    return next(iter(served))


def join_posteriors(parts: list[Posterior]) -> Posterior:
    model, version = _one_version(parts)
    scales = [p.scale for p in parts]
    scale = None if scales[0] is None else np.concatenate(scales)
    return Posterior(np.concatenate([p.mean for p in parts]), scale, model, version)


def join_images(parts: list[tuple[np.ndarray, str, int]]) -> np.ndarray:
    _one_version(parts)
    return np.concatenate([p[0] for p in parts])
