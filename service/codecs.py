"""Bytes in, arrays out and back: JSON numbers, base64 PNGs and .npy bodies to float32 (N, D) arrays, checked with
numpy (shape, finite, range) before anything is queued; the seed and flag values of bodies and query strings; and
arrays to JSON, PNG grids and .npy replies.

No pydantic on this path: bodies are parsed with orjson and validated with numpy, which is what keeps it fast.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import random
import re

import numpy as np
import orjson
from PIL import Image

from lvm.networks import IMAGE_SHAPE, INPUT_DIM
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
NPY = "application/x-npy"
PNG = "image/png"
_PNG_DATA_URL = "data:image/png;base64,"
MIN_ITEMS = 1  # per request; the most is the max_items_per_request setting
SEED_LIMIT = 2**63  # seeds lie in [0, SEED_LIMIT)
SAMPLE_COUNT = 16  # draws when a sample request gives no count
SCORE_SAMPLES = 100  # importance samples when a score request gives none
MAX_SCORE_SAMPLES = 5000
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")
# Pillow's modes for 16-bit greyscale PNGs (Pillow keeps 16 bits only for grey; colour comes as 8-bit RGB).
_SIXTEEN_BIT_GREY = frozenset(("I;16", "I;16B", "I;16L", "I"))


def body_format(content_type: str | None) -> str:
    """'json' or 'npy' from the Content-Type header (missing means JSON); anything else is a 415."""
    if content_type is None:
        return "json"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON or media == "":
        return "json"
    if media == NPY:
        return "npy"
    raise UnsupportedMediaType(f"content type {media!r} is not supported; send {JSON} or {NPY}")


def reply_format(accept: str | None) -> str:
    """'json', 'png' or 'npy': the first of the types we offer that the Accept header names (JSON by default)."""
    if not accept or accept == JSON or accept == "*/*":
        return "json"
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == NPY:
            return "npy"
        if media == PNG:
            return "png"
        if media in (JSON, "application/*", "*/*"):
            return "json"
    return "json"


def load_json(body: bytes) -> dict:
    """The body as a JSON object."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidInput("body must be a JSON object")
    return obj


def check_count(n: int, max_items: int, what: str) -> None:
    if n > max_items:
        raise PayloadTooLarge(f"{n} {what} exceed the limit of {max_items} per request")
    if n < MIN_ITEMS:
        raise InvalidInput(f"send at least one of the {what}")


def seed(value: object) -> int:
    """A body's seed (a JSON integer in [0, 2^63)), or a fresh random one when it gave none."""
    if value is None:
        return random.getrandbits(63)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise InvalidInput("seed must be an integer in [0, 2^63) or null")
    return value


def ascii_digits(text: str) -> bool:
    """Whether text is 1 to 19 ASCII digits: '²' passes str.isdigit and int() would take '١', so neither is used on
    numbers that come as text (query values, headers, path segments)."""
    return _ASCII_DIGITS.fullmatch(text) is not None


def query_seed(text: str | None) -> int:
    """A query string's seed, in ASCII digits."""
    if text is not None and not ascii_digits(text):
        raise InvalidInput(f"seed must be a non-negative integer in ASCII digits, got {text[:32]!r}")
    return seed(None if text is None else int(text))


def flag(text: str | None, name: str) -> bool:
    """A query string's boolean: absent, 0, false or no; 1, true or yes."""
    if text is None or text.lower() in ("0", "false", "no"):
        return False
    if text.lower() in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false, got {text[:16]!r}")


def _numbers(value: object, what: str) -> np.ndarray:
    """A rectangular nested list of JSON numbers as float32; strings, nulls and ragged rows are refused."""
    # Straight to float32 (twice as fast as letting numpy infer a dtype); numeric strings and booleans convert like
    # numbers, null becomes NaN and fails the range check, anything else raises here.
    try:
        with np.errstate(over="ignore"):
            return np.array(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        if "sequence" in str(exc) or "inhomogeneous" in str(exc):
            raise InvalidInput(f"{what} must be a rectangular array of numbers (rows of unequal length?)") from None
        raise InvalidInput(f"{what} must hold only numbers") from None


def _as_rows(arr: np.ndarray, what: str) -> np.ndarray:
    """(N, 784) from (N, 784) or (N, 28, 28)."""
    if arr.ndim == 2 and arr.shape[1] == INPUT_DIM:
        return arr
    if arr.ndim == 3 and arr.shape[1:] == IMAGE_SHAPE:
        return arr.reshape(len(arr), INPUT_DIM)
    got = "a single image; wrap it in a list" if arr.ndim == 1 else f"images of shape {tuple(arr.shape[1:])}"
    raise InvalidInput(f"each of the {what} must be 784 numbers or 28 rows of 28 numbers; got {got}")


def check_pixels(x: np.ndarray) -> np.ndarray:
    """x itself when every pixel is a finite number in [0, 1] (NaN fails both comparisons)."""
    lo, hi = x.min(), x.max()
    if not (lo >= 0.0 and hi <= 1.0):
        if not np.isfinite(x).all():
            raise InvalidInput("images hold non-finite numbers")
        raise InvalidInput(f"pixels must lie in [0, 1], got values in [{_exact(lo)}, {_exact(hi)}]; "
                           "send uint8 .npy for 0-255")
    return x


def _exact(value: np.floating) -> str:
    """The shortest decimal that reads back as the same float32: 1.0000001 stays 1.0000001, never 1."""
    return np.format_float_positional(value, unique=True, trim="-")


def decode_png(text: str, index: int = 0) -> np.ndarray:
    """A base64 PNG (28x28; 1-, 8- or 16-bit grey, palette, RGB or RGBA) as 784 float32 pixels in [0, 1], scaled by
    the image's bit depth; colour becomes 8-bit luminance and alpha is ignored."""
    if text.startswith(_PNG_DATA_URL):
        text = text[len(_PNG_DATA_URL):]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"image {index} is a string but not valid base64") from None
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            # The size is known from the header, before any pixel is decoded: this also stops decompression bombs.
            if img.size != (IMAGE_SHAPE[1], IMAGE_SHAPE[0]):
                raise InvalidInput(f"image {index} is {img.size[0]}x{img.size[1]} pixels; only 28x28 PNGs are accepted")
            if img.mode in _SIXTEEN_BIT_GREY:  # convert("L") would clip every value above 255 to white
                gray = np.asarray(img, dtype=np.float32) / np.float32(65535.0)
            else:
                gray = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    except InvalidInput:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError) for bad files
        raise InvalidInput(f"image {index} is not a readable PNG ({type(exc).__name__})") from None
    return gray.reshape(INPUT_DIM)


def _one_image(value: object, index: int) -> np.ndarray:
    if isinstance(value, str):
        return decode_png(value, index)
    arr = _numbers(value, f"image {index}")
    if arr.shape == (INPUT_DIM,) or arr.shape == IMAGE_SHAPE:
        return arr.reshape(INPUT_DIM)
    raise InvalidInput(f"image {index} must be 784 numbers or 28 rows of 28 numbers; got shape {arr.shape}")


def images_from_json(value: object, max_items: int) -> np.ndarray:
    """(N, 784) float32 in [0, 1] from a JSON list of images (numbers, rows, or base64 PNGs, mixed freely)."""
    if not isinstance(value, list):
        raise InvalidInput("'images' must be a list of images")
    if value and isinstance(value[0], (int, float)):
        raise InvalidInput("'images' must be a list of images; got a single image, wrap it in a list")
    check_count(len(value), max_items, "images")
    x = None if any(isinstance(item, str) for item in value) else _uniform_rows(value)
    if x is None:  # PNGs, or flat and 28x28 images mixed: image by image
        x = np.stack([_one_image(item, i) for i, item in enumerate(value)])
    return check_pixels(x)


def _uniform_rows(value: list) -> np.ndarray | None:
    """(N, 784) in one numpy call when every image has the same layout; None when layouts are mixed or malformed
    (then each image is read on its own, which also names the bad one)."""
    try:
        with np.errstate(over="ignore"):
            arr = np.array(value, dtype=np.float32)
    except (ValueError, TypeError):
        return None
    return _as_rows(arr, "images")


def latents_from_json(value: object, latent_dim: int, max_items: int) -> np.ndarray:
    """(N, K) float32 from a JSON list of latent vectors of the model's dimension."""
    if not isinstance(value, list):
        raise InvalidInput("'latents' must be a list of latent vectors")
    check_count(len(value), max_items, "latents")
    return check_latents(_numbers(value, "latents"), latent_dim)


def check_latents(z: np.ndarray, latent_dim: int) -> np.ndarray:
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise InvalidInput(f"latents must be rows of {latent_dim} numbers for this model; got shape {z.shape}")
    if not np.isfinite(z).all():
        raise InvalidInput("latents hold non-finite numbers")
    return z


def read_npy(body: bytes) -> np.ndarray:
    """The array in a .npy body; pickled object arrays and .npz archives are refused."""
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for malformed files
        raise InvalidInput(f"body is not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise InvalidInput("body must be a single .npy array, not an .npz archive")
    return arr


def images_from_npy(body: bytes, max_items: int) -> np.ndarray:
    """(N, 784) float32 in [0, 1] from a .npy of shape (N, 28, 28) or (N, 784), uint8 0-255 or float 0-1."""
    return images_from_array(read_npy(body), max_items)


def images_from_array(arr: np.ndarray, max_items: int) -> np.ndarray:
    """(N, 784) float32 in [0, 1] from an array of shape (N, 28, 28) or (N, 784), uint8 0-255 or float 0-1."""
    if arr.ndim in (2, 3):
        check_count(len(arr), max_items, "images")
    if arr.dtype == np.uint8:
        return np.divide(_as_rows(arr, "images"), np.float32(255.0), dtype=np.float32)
    if arr.dtype.kind == "f":
        return check_pixels(_as_rows(arr, "images").astype(np.float32, copy=False))
    raise InvalidInput(f"image arrays must be uint8 (0-255) or float32 (0-1), not {arr.dtype}")


def latents_from_npy(body: bytes, latent_dim: int, max_items: int) -> np.ndarray:
    """(N, K) float32 from a float .npy of shape (N, K)."""
    return latents_from_array(read_npy(body), latent_dim, max_items)


def latents_from_array(arr: np.ndarray, latent_dim: int, max_items: int) -> np.ndarray:
    """(N, K) float32 from a float array of shape (N, K)."""
    if arr.dtype.kind != "f":
        raise InvalidInput(f"latent arrays must be float32, not {arr.dtype}")
    if arr.ndim == 2:
        check_count(len(arr), max_items, "latents")
    return check_latents(arr.astype(np.float32, copy=False), latent_dim)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def png_grid(images: np.ndarray) -> bytes:
    """One grayscale PNG tiling (N, 784) images row by row in a near-square grid (blank tiles fill the last row)."""
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = np.zeros((rows * cols, INPUT_DIM), np.uint8)
    tiles[:n] = np.rint(np.clip(images, 0.0, 1.0) * 255.0)
    h, w = IMAGE_SHAPE
    grid = tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
