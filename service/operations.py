"""Every operation the service offers, as data: one `Operation` per URL (`/encode`, ...) and per protocol model
(`<model>-encode`, ...). Each entry says what it takes (array inputs, scalar parameters), how a request becomes the
batcher's float32 rows, what runs on those rows in the compute thread, what comes out (names, dtypes, widths), and how
warm-up exercises it. Models (service/models.py), the native routes (service/routes.py), the protocol routes
(service/oip.py, service/oip_models.py), metrics and warm-up all read this table; adding an operation is an entry
here, its schemas (service/schemas.py) and, for the client, a method.

Noise never travels as numbers and is never drawn on the event loop: a row that needs noise carries a key (the
request's seed as two float32 words holding its 64 bits, the row's index in its request and the request's row count)
and `prepare` turns keys into standard normal draws on the compute thread. A request's noise is
`torch.randn((n, K), generator=seed)` whatever batches its rows land in, so batching never changes a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hashlib

import numpy as np
import torch
from torch import Tensor

from lvm.networks import INPUT_DIM
from service import codecs, schemas
from service.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from service.models import ServedModel
    from service.settings import Settings

KEY_COLS = 4  # seed (two float32 words holding a uint64), index of the row in its request, rows in the request
SCORE_CHUNK = 32768  # (image, sample) pairs scored at once: bounds the memory of a pass


# -- what goes in --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    """An array input: `images` (N, 784) or `latents` (N, K). Native JSON bodies carry it under its name, an .npy
    body is it; protocol requests send it as a tensor of one of `datatypes`."""

    name: str
    datatypes: tuple[str, ...]  # accepted under /v2; metadata shows the first

    def width(self, served: ServedModel) -> int:
        return INPUT_DIM if self.name == "images" else served.latent_dim

    def from_json(self, value: object, served: ServedModel, max_items: int) -> np.ndarray:
        if self.name == "images":
            return codecs.images_from_json(value, max_items)
        return codecs.latents_from_json(value, served.latent_dim, max_items)

    def from_npy(self, body: bytes, served: ServedModel, max_items: int) -> np.ndarray:
        if self.name == "images":
            return codecs.images_from_npy(body, max_items)
        return codecs.latents_from_npy(body, served.latent_dim, max_items)

    def from_array(self, array: np.ndarray, served: ServedModel, max_items: int) -> np.ndarray:
        if self.name == "images":
            return codecs.images_from_array(array, max_items)
        return codecs.latents_from_array(array, served.latent_dim, max_items)


IMAGES = Input("images", ("FP32", "UINT8"))
LATENTS = Input("latents", ("FP32",))


@dataclass(frozen=True)
class Param:
    """A scalar parameter: a key of the native JSON body (a query parameter beside an .npy body), a protocol
    `parameters` entry. `parse` takes the JSON value (None when absent) and returns the value the operation uses."""

    name: str
    parse: Callable[[object], Any]
    from_query: Callable[[str | None], Any]
    aliases: tuple[str, ...] = ()  # other names native bodies may use (`n` for `count`)
    schema: dict = field(default_factory=dict)  # OpenAPI, for the protocol's parameters


def _flag(name: str) -> Param:
    def parse(value: object) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise InvalidInput(f"{name} must be true or false")
        return value

    return Param(name, parse, lambda text: codecs.flag(text, name), schema={"type": "boolean"})


def _count(name: str, default: int, aliases: tuple[str, ...] = ()) -> Param:
    """An integer (its bounds are checked where the request's limits are known: `pack`)."""

    def parse(value: object) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be an integer")
        return value

    def from_query(text: str | None) -> int:
        if text is None:
            return default
        if not codecs.ascii_digits(text):
            raise InvalidInput(f"{name} must be a positive integer in ASCII digits, got {text[:32]!r}")
        return int(text)

    return Param(name, parse, from_query, aliases, {"type": "integer", "minimum": 1, "default": default})


def _samples(value: object) -> int:
    if value is None:
        return codecs.SCORE_SAMPLES
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= codecs.MAX_SCORE_SAMPLES:
        raise InvalidInput(f"samples must be an integer in [1, {codecs.MAX_SCORE_SAMPLES}], got {str(value)[:32]}")
    return value


def _samples_query(text: str | None) -> int:
    if text is not None and not codecs.ascii_digits(text):
        raise InvalidInput(f"samples must be an integer in [1, {codecs.MAX_SCORE_SAMPLES}] in ASCII digits, "
                           f"got {text[:32]!r}")
    return _samples(None if text is None else int(text))


SEED = Param("seed", codecs.seed, codecs.query_seed,
             schema={"type": "integer", "minimum": 0, "maximum": codecs.SEED_LIMIT - 1})
SAMPLE = _flag("sample")
COUNT = _count("count", codecs.SAMPLE_COUNT, aliases=("n",))
SAMPLES = Param("samples", _samples, _samples_query,
                schema={"type": "integer", "minimum": 1, "maximum": codecs.MAX_SCORE_SAMPLES,
                        "default": codecs.SCORE_SAMPLES})


@dataclass(frozen=True)
class Call:
    """One request, parsed: its arrays by input name and its parameters by name."""

    arrays: dict[str, np.ndarray]
    params: dict[str, Any]


# -- what comes out ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """One output: (N, width) float32, or one value per item when `width` is None (`datatype` says which type).
    `present(served)` says whether this model gives it (the AE has no posterior scale)."""

    name: str
    width: Callable[[ServedModel], int] | None
    datatype: str = "FP32"
    present: Callable[[ServedModel], bool] = lambda served: True


def _latent(served: ServedModel) -> int:
    return served.latent_dim


def _pixels(served: ServedModel) -> int:
    return INPUT_DIM


def _has_scale(served: ServedModel) -> bool:
    return served.has_scale


def _has_reference(served: ServedModel) -> bool:
    return served.outlier_rule is not None


def _score_term(name: str) -> Callable[[ServedModel], bool]:
    return lambda served: name in served.score_terms


MEAN = Output("mean", _latent)
SCALE = Output("scale", _latent, present=_has_scale)
IMAGES_OUT = Output("images", _pixels)
LATENTS_OUT = Output("latents", _latent)


# -- the operations ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Operation:
    name: str  # as the URL and the protocol model's suffix name it
    summary: str
    inputs: tuple[Input, ...]
    params: tuple[Param, ...]
    outputs: tuple[Output, ...]
    # What the compute thread runs: fn(served) gives a function of the (B, width) device tensor of prepared rows,
    # returning one tensor per output the model gives, in the order of `outputs`.
    compute: Callable[[ServedModel], Callable[[Tensor], tuple[Tensor, ...]]]
    pack: Callable[[ServedModel, Call, Settings], np.ndarray]  # the request's rows (checks the request limits)
    width: Callable[[ServedModel], int]  # columns of a packed row
    warmup: Callable[[ServedModel, int], np.ndarray]  # `size` packed rows for warm-up
    # Packed rows -> the rows `compute` takes, on the compute thread (noise keys become noise); None: as packed.
    # The native route's request and response models (OpenAPI only) and how its .npy body looks (None: JSON only).
    request_schema: type[schemas.BaseModel] = schemas.BaseModel
    response_schema: type[schemas.BaseModel] = schemas.BaseModel
    npy_body: str | None = schemas.IMAGES_NPY
    prepare: Callable[[np.ndarray, int], np.ndarray] | None = None
    images_reply: bool = False  # whether Accept: image/png or application/x-npy may ask for the images alone
    echo: tuple[str, ...] = ()  # parameters the native reply repeats

    def given(self, served: ServedModel) -> tuple[Output, ...]:
        """The outputs this model gives, in order."""
        return tuple(out for out in self.outputs if out.present(served))


def _array(call: Call, name: str) -> np.ndarray:
    return call.arrays[name]


# Noise keys: columns [seed word 0, seed word 1, index, count]; count 0 means no noise (eps = 0).

def noise_keys(n: int, seed: int | None) -> np.ndarray:
    """(n, KEY_COLS) float32 keys of a request's n rows; seed None: no noise."""
    keys = np.zeros((n, KEY_COLS), np.float32)
    if seed is not None:
        keys[:, :2] = np.array([seed], np.uint64).view(np.float32)
        keys[:, 2] = np.arange(n, dtype=np.float32)
        keys[:, 3] = n
    return keys


def noise(keys: np.ndarray, latent_dim: int) -> np.ndarray:
    """Standard normal (B, K) for rows keyed by `noise_keys` (on the compute thread). Rows of one request are
    consecutive in a batch (a batch takes consecutive rows of each request), so each run of rows with the same seed
    and consecutive indices is a slice of that request's draws."""
    out = np.zeros((len(keys), latent_dim), np.float32)
    seeds = np.ascontiguousarray(keys[:, :2]).view(np.uint64)[:, 0]
    index, count = keys[:, 2].astype(np.int64), keys[:, 3].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, (seeds[1:] != seeds[:-1]) | (count[1:] != count[:-1])
                                  | (index[1:] != index[:-1] + 1)])
    for start, stop in zip(starts, np.r_[starts[1:], len(keys)]):
        n = int(count[start])
        if n == 0:
            continue
        draws = torch.randn((n, latent_dim), generator=torch.Generator().manual_seed(int(seeds[start]))).numpy()
        first = int(index[start])
        out[start:stop] = draws[first:first + stop - start]
    return out


def _with_noise(width: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """prepare() for rows [data (width) | key]: [data | eps]."""

    def prepare(rows: np.ndarray, latent_dim: int) -> np.ndarray:
        eps = noise(rows[:, width:], latent_dim)
        return np.concatenate([rows[:, :width], eps], axis=1) if width else eps

    return prepare


# encode: x (B, 784) -> mean, scale

def _encode(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model
    def run(x: Tensor) -> tuple[Tensor, ...]:
        z_loc, z_scale = model.encode(x)
        return (z_loc,) if z_scale is None else (z_loc, z_scale)

    return run


ENCODE = Operation(
    "encode", "Posterior of z given images", (IMAGES,), (), (MEAN, SCALE), _encode,
    pack=lambda served, call, settings: _array(call, "images"),
    width=_pixels,
    warmup=lambda served, size: np.full((size, INPUT_DIM), 0.5, np.float32),
    request_schema=schemas.EncodeRequest, response_schema=schemas.EncodeResponse,
)


# decode: z (B, K) -> images

def _decode(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model
    def run(z: Tensor) -> tuple[Tensor, ...]:
        return (model.decode(z),)

    return run


DECODE = Operation(
    "decode", "Pixel means of latent codes", (LATENTS,), (), (IMAGES_OUT,), _decode,
    pack=lambda served, call, settings: _array(call, "latents"),
    width=_latent,
    warmup=lambda served, size: np.zeros((size, served.latent_dim), np.float32),
    request_schema=schemas.DecodeRequest, response_schema=schemas.DecodeResponse, npy_body="float32 (N, K) array",
    images_reply=True,
)


# reconstruct: [x | key] (B, 784 + 4) -> prepared [x | eps] (B, 784 + K) -> images, mean, scale

def _reconstruct(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model
    def run(rows: Tensor) -> tuple[Tensor, ...]:
        x_loc, z_loc, z_scale = model.reconstruct(rows[:, :INPUT_DIM], rows[:, INPUT_DIM:])
        return (x_loc, z_loc) if z_scale is None else (x_loc, z_loc, z_scale)

    return run


def _pack_reconstruct(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    x = _array(call, "images")
    keys = noise_keys(len(x), call.params["seed"] if call.params["sample"] else None)
    return np.concatenate([x, keys], axis=1)


RECONSTRUCT = Operation(
    "reconstruct", "Images through the posterior and back", (IMAGES,), (SAMPLE, SEED), (IMAGES_OUT, MEAN, SCALE),
    _reconstruct, pack=_pack_reconstruct,
    width=lambda served: INPUT_DIM + KEY_COLS,
    warmup=lambda served, size: np.concatenate(
        [np.full((size, INPUT_DIM), 0.5, np.float32), noise_keys(size, 0)], axis=1),
    request_schema=schemas.ReconstructRequest, response_schema=schemas.ReconstructResponse,
    npy_body=schemas.IMAGES_NPY + "; sample and seed as query parameters",
    prepare=_with_noise(INPUT_DIM), images_reply=True,
)


# sample: key (B, 4) -> prepared eps (B, K) -> latents, images

def _sample(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model
    def run(eps: Tensor) -> tuple[Tensor, ...]:
        return model.sample(eps)

    return run


def _pack_sample(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    n = call.params["count"]
    codecs.check_count(n, settings.max_items_per_request, "samples")
    return noise_keys(n, call.params["seed"])


SAMPLE_OP = Operation(
    "sample", "Draws from the prior, decoded", (), (COUNT, SEED), (LATENTS_OUT, IMAGES_OUT), _sample,
    pack=_pack_sample, width=lambda served: KEY_COLS,
    warmup=lambda served, size: noise_keys(size, 0),
    request_schema=schemas.SampleRequest, response_schema=schemas.SampleResponse, npy_body=None,
    prepare=_with_noise(0), images_reply=True,
)


# score: [x | image key (2 words) | samples] (B, 787) -> log_likelihood, percentile, outlier (+ the model's own terms)

def image_keys(x: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) float32 words of a 64-bit key per image: a keyed hash of the request's seed and the image's pixels, so
    an image's draws depend on nothing else (not its position, not its batch) and different images get independent
    ones."""
    salt = seed.to_bytes(8, "little")
    keys = np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest(), "little")
                     for row in x], np.uint64)
    return keys.reshape(-1, 1).view(np.float32)


def image_noise(keys: np.ndarray, samples: int, latent_dim: int) -> np.ndarray:
    """(B, samples, K) standard normal draws, one generator per image key (on the compute thread)."""
    seeds = np.ascontiguousarray(keys).view(np.uint64)[:, 0]
    return np.stack([torch.randn((samples, latent_dim), generator=torch.Generator().manual_seed(int(key))).numpy()
                     for key in seeds])


def _score(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model, rule, latent_dim = served.model, served.outlier_rule, served.latent_dim
    names = ("log_likelihood", *(t for t in served.score_terms if t != "log_likelihood"))

    def run(rows: Tensor) -> tuple[Tensor, ...]:
        host = rows.cpu().numpy()
        samples = host[:, INPUT_DIM + 2].astype(np.int64)
        terms = {name: np.empty(len(rows), np.float32) for name in names}
        for count in np.unique(samples):
            index = np.flatnonzero(samples == count)
            step = max(1, SCORE_CHUNK // int(count))
            for start in range(0, len(index), step):
                part = index[start:start + step]
                eps = torch.from_numpy(image_noise(host[part, INPUT_DIM:INPUT_DIM + 2], int(count), latent_dim))
                x = rows[torch.from_numpy(part).to(rows.device), :INPUT_DIM]
                got = model.score_terms(x, eps.to(rows.device))
                for name in names:
                    terms[name][part] = got[name].float().cpu().numpy()
        out = [terms["log_likelihood"]]
        if rule is not None:
            percentile, outlier = rule.assess(host[:, :INPUT_DIM], terms)
            out += [np.asarray(percentile, np.float32), np.asarray(outlier, np.bool_)]
        out += [terms[name] for name in names[1:]]
        return tuple(torch.from_numpy(array) for array in out)

    return run


def _score_rows(x: np.ndarray, samples: int, seed: int) -> np.ndarray:
    counts = np.full((len(x), 1), samples, np.float32)
    return np.concatenate([x, image_keys(x, seed), counts], axis=1)


def _pack_score(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    x, samples = _array(call, "images"), call.params["samples"]
    work, bound = len(x) * samples, settings.max_score_work
    if work > bound:
        raise PayloadTooLarge(f"{len(x)} images x {samples} samples = {work} exceed the limit of {bound} "
                              "(images x samples) per request; send fewer images or ask for fewer samples")
    return _score_rows(x, samples, call.params["seed"])


SCORE = Operation(
    "score", "How likely each image is under the model, its percentile among the test set, and an outlier verdict",
    (IMAGES,), (SAMPLES, SEED),
    (Output("log_likelihood", None), Output("percentile", None, present=_has_reference),
     Output("outlier", None, "BOOL", present=_has_reference),
     *(Output(term, None, present=_score_term(term)) for term in ("elbo", "reconstruction", "kl"))),
    _score, pack=_pack_score,
    width=lambda served: INPUT_DIM + 3,
    warmup=lambda served, size: _score_rows(np.full((size, INPUT_DIM), 0.5, np.float32), codecs.SCORE_SAMPLES, 0),
    request_schema=schemas.ScoreRequest, response_schema=schemas.ScoreResponse,
    npy_body=schemas.IMAGES_NPY + "; samples and seed as query parameters", echo=("samples",),
)

OPERATIONS: dict[str, Operation] = {op.name: op for op in (ENCODE, DECODE, RECONSTRUCT, SAMPLE_OP, SCORE)}
NAMES = tuple(OPERATIONS)
