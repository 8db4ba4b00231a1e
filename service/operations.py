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

from lvm.networks import INPUT_DIM, SCORE_CHUNK_PAIRS
from service import codecs, schemas
from service.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from service.models import ServedModel
    from service.settings import Settings

KEY_COLS = 4  # seed (two float32 words holding a uint64), index of the row in its request, rows in the request
DIGIT_COLS = 1  # the digit a row is about, 0-9, or NO_DIGIT; exact in float32
NO_DIGIT = -1


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


def _digit(value: object) -> int:
    """A digit 0-9 as a JSON integer (not a bool, a string or a float); -1 when absent."""
    if value is None:
        return NO_DIGIT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise InvalidInput(f"digit must be an integer from 0 to 9, got {str(value)[:32]!r}")
    return value


def _digit_query(text: str | None) -> int:
    if text is None:
        return NO_DIGIT
    if len(text) != 1 or not codecs.ascii_digits(text):  # '٣' and '³' are not digits here
        raise InvalidInput(f"digit must be one ASCII digit 0-9, got {text[:32]!r}")
    return int(text)


SEED = Param("seed", codecs.seed, codecs.query_seed,
             schema={"type": "integer", "minimum": 0, "maximum": codecs.SEED_LIMIT - 1})
SAMPLE = _flag("sample")
COUNT = _count("count", codecs.SAMPLE_COUNT, aliases=("n",))
DIGIT = Param("digit", _digit, _digit_query, schema={"type": "integer", "minimum": 0, "maximum": 9})
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
    # `size` packed rows for warm-up; `timed` says whether their pass picks the batch size (else they only check
    # the operation runs: score then draws one sample per image, not SCORE_SAMPLES).
    warmup: Callable[[ServedModel, int, bool], np.ndarray]
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


def noise(keys: np.ndarray, latent_dim: int, uniform: bool = False) -> np.ndarray:
    """Standard normal (B, K) for rows keyed by `noise_keys` (on the compute thread), and with `uniform` one more
    column uniform in [0, 1) drawn after them from the same generator (the first K columns are unchanged by it). Rows
    of one request are consecutive in a batch (a batch takes consecutive rows of each request), so each run of rows
    with the same seed and consecutive indices is a slice of that request's draws."""
    out = np.zeros((len(keys), latent_dim + uniform), np.float32)
    seeds = np.ascontiguousarray(keys[:, :2]).view(np.uint64)[:, 0]
    index, count = keys[:, 2].astype(np.int64), keys[:, 3].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, (seeds[1:] != seeds[:-1]) | (count[1:] != count[:-1])
                                  | (index[1:] != index[:-1] + 1)])
    for start, stop in zip(starts, np.r_[starts[1:], len(keys)]):
        n = int(count[start])
        if n == 0:
            continue
        generator = torch.Generator().manual_seed(int(seeds[start]))
        draws = torch.randn((n, latent_dim), generator=generator).numpy()
        if uniform:
            draws = np.concatenate([draws, torch.rand((n, 1), generator=generator).numpy()], axis=1)
        first = int(index[start])
        out[start:stop] = draws[first:first + stop - start]
    return out


def _with_noise(width: int, uniform: bool = False) -> Callable[[np.ndarray, int], np.ndarray]:
    """prepare() for rows [data (width) | key]: [data | eps], with `uniform` [data | eps | u]."""

    def prepare(rows: np.ndarray, latent_dim: int) -> np.ndarray:
        eps = noise(rows[:, width:], latent_dim, uniform)
        return np.concatenate([rows[:, :width], eps], axis=1) if width else eps

    return prepare


def _digits(rows: Tensor) -> Tensor:
    """The digit column of device rows as int64 labels (-1: none)."""
    return rows.round().long()


def _digit_column(served: ServedModel, call: Call, n: int, native: bool) -> np.ndarray:
    """(n, 1) float32 of the request's digit. Where the digit is `native` (it goes into the networks: encode,
    decode, reconstruct) only a conditional model takes one; `sample` takes one from any model with a distribution
    per digit."""
    digit = call.params.get("digit", NO_DIGIT)
    if digit != NO_DIGIT:
        if native and not served.conditional:
            raise InvalidInput(f"{served.name} ({served.kind}) does not take a digit here: its networks are not "
                               "conditioned on the label; digit is taken by conditional models (cvae), and by "
                               "/sample for every model with a distribution per digit")
        if not native and not served.digits:
            raise InvalidInput(f"{served.name}/{served.version} has no distribution per digit to draw from: its "
                               "artifact has no classes.safetensors (add one with `python -m training derive "
                               "--add classes`)")
    return np.full((n, DIGIT_COLS), digit, np.float32)


# encode: [x | digit] (B, 784 + 1) -> mean, scale

def _encode(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model

    def run(rows: Tensor) -> tuple[Tensor, ...]:
        z_loc, z_scale = model.encode(rows[:, :INPUT_DIM], _digits(rows[:, INPUT_DIM]))
        return (z_loc,) if z_scale is None else (z_loc, z_scale)

    return run


def _pack_images(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    x = _array(call, "images")
    return np.concatenate([x, _digit_column(served, call, len(x), native=True)], axis=1)


def _warm_images(size: int, digit: int) -> np.ndarray:
    return np.concatenate([np.full((size, INPUT_DIM), 0.5, np.float32),
                           np.full((size, DIGIT_COLS), digit, np.float32)], axis=1)


ENCODE = Operation(
    "encode", "Posterior of z given images", (IMAGES,), (DIGIT,), (MEAN, SCALE), _encode,
    pack=_pack_images,
    width=lambda served: INPUT_DIM + DIGIT_COLS,
    warmup=lambda served, size, timed: _warm_images(size, NO_DIGIT),
    request_schema=schemas.EncodeRequest, response_schema=schemas.EncodeResponse,
)


# decode: z (B, K) -> images

def _decode(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model, k = served.model, served.latent_dim

    def run(rows: Tensor) -> tuple[Tensor, ...]:
        return (model.decode(rows[:, :k], _digits(rows[:, k])),)

    return run


def _pack_decode(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    z = _array(call, "latents")
    return np.concatenate([z, _digit_column(served, call, len(z), native=True)], axis=1)


DECODE = Operation(
    "decode", "Pixel means of latent codes", (LATENTS,), (DIGIT,), (IMAGES_OUT,), _decode,
    pack=_pack_decode,
    width=lambda served: served.latent_dim + DIGIT_COLS,
    warmup=lambda served, size, timed: np.concatenate([np.zeros((size, served.latent_dim), np.float32),
                                                np.full((size, DIGIT_COLS), NO_DIGIT, np.float32)], axis=1),
    request_schema=schemas.DecodeRequest, response_schema=schemas.DecodeResponse, npy_body="float32 (N, K) array",
    images_reply=True,
)


# reconstruct: [x | digit | key] (B, 784 + 1 + 4) -> prepared [x | digit | eps] (B, 784 + 1 + K) -> images, mean,
# scale

def _reconstruct(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model = served.model

    def run(rows: Tensor) -> tuple[Tensor, ...]:
        x_loc, z_loc, z_scale = model.reconstruct(rows[:, :INPUT_DIM], rows[:, INPUT_DIM + DIGIT_COLS:],
                                                  _digits(rows[:, INPUT_DIM]))
        return (x_loc, z_loc) if z_scale is None else (x_loc, z_loc, z_scale)

    return run


def _pack_reconstruct(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    x = _pack_images(served, call, settings)
    keys = noise_keys(len(x), call.params["seed"] if call.params["sample"] else None)
    return np.concatenate([x, keys], axis=1)


RECONSTRUCT = Operation(
    "reconstruct", "Images through the posterior and back", (IMAGES,), (SAMPLE, SEED, DIGIT),
    (IMAGES_OUT, MEAN, SCALE), _reconstruct, pack=_pack_reconstruct,
    width=lambda served: INPUT_DIM + DIGIT_COLS + KEY_COLS,
    warmup=lambda served, size, timed: np.concatenate([_warm_images(size, NO_DIGIT), noise_keys(size, 0)], axis=1),
    request_schema=schemas.ReconstructRequest, response_schema=schemas.ReconstructResponse,
    npy_body=schemas.IMAGES_NPY + "; sample, seed and digit as query parameters",
    prepare=_with_noise(INPUT_DIM + DIGIT_COLS), images_reply=True,
)


# sample: [digit | key] (B, 1 + 4) -> prepared [digit | eps | u] (B, 1 + K + 1) -> latents, images. Without a digit
# eps is the same draw as before digits existed (u is drawn after it), so a seed keeps its images.

def _sample(served: ServedModel) -> Callable[[Tensor], tuple[Tensor, ...]]:
    model, k = served.model, served.latent_dim

    def run(rows: Tensor) -> tuple[Tensor, ...]:
        return model.sample_digits(_digits(rows[:, 0]), rows[:, DIGIT_COLS:DIGIT_COLS + k], rows[:, DIGIT_COLS + k])

    return run


def _pack_sample(served: ServedModel, call: Call, settings: Settings) -> np.ndarray:
    n = call.params["count"]
    codecs.check_count(n, settings.max_items_per_request, "samples")
    return np.concatenate([_digit_column(served, call, n, native=False), noise_keys(n, call.params["seed"])], axis=1)


SAMPLE_OP = Operation(
    "sample", "Draws from the prior (or of one digit), decoded", (), (COUNT, SEED, DIGIT), (LATENTS_OUT, IMAGES_OUT),
    _sample, pack=_pack_sample, width=lambda served: DIGIT_COLS + KEY_COLS,
    warmup=lambda served, size, timed: np.concatenate(
        [np.full((size, DIGIT_COLS), 0 if served.digits else NO_DIGIT, np.float32), noise_keys(size, 0)], axis=1),
    request_schema=schemas.SampleRequest, response_schema=schemas.SampleResponse, npy_body=None,
    prepare=_with_noise(DIGIT_COLS, uniform=True), images_reply=True,
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
            step = max(1, SCORE_CHUNK_PAIRS // int(count))
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
                              "(images x samples) per request; send fewer images or ask for fewer samples",
                              "max_score_work", bound, work)
    return _score_rows(x, samples, call.params["seed"])


SCORE = Operation(
    "score", "How likely each image is under the model, its percentile among the test set, and an outlier verdict",
    (IMAGES,), (SAMPLES, SEED),
    (Output("log_likelihood", None), Output("percentile", None, present=_has_reference),
     Output("outlier", None, "BOOL", present=_has_reference),
     *(Output(term, None, present=_score_term(term)) for term in ("elbo", "reconstruction", "kl"))),
    _score, pack=_pack_score,
    width=lambda served: INPUT_DIM + 3,
    warmup=lambda served, size, timed: _score_rows(
        np.full((size, INPUT_DIM), 0.5, np.float32), codecs.SCORE_SAMPLES if timed else 1, 0),
    request_schema=schemas.ScoreRequest, response_schema=schemas.ScoreResponse,
    npy_body=schemas.IMAGES_NPY + "; samples and seed as query parameters", echo=("samples",),
)

OPERATIONS: dict[str, Operation] = {op.name: op for op in (ENCODE, DECODE, RECONSTRUCT, SAMPLE_OP, SCORE)}
NAMES = tuple(OPERATIONS)
