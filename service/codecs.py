"""Bytes in, arrays out and back: JSON numbers, base64 PNGs and .npy bodies to float32 (N, D) arrays, checked with
numpy (shape, finite, range) before anything is queued; and arrays to JSON, PNG grids and .npy replies.

No pydantic on this path: bodies are parsed with orjson and validated with numpy, which is what keeps it fast.
"""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np
import orjson
from PIL import Image

from lvm.networks import IMAGE_SHAPE, INPUT_DIM
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
NPY = "application/x-npy"
PNG = "image/png"
_PNG_DATA_URL = "data:image/png;base64,"


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
    if n < 1:
        raise InvalidInput(f"send at least one of the {what}")


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
        raise InvalidInput(f"pixels must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; send uint8 .npy for 0-255")
    return x


def decode_png(text: str, index: int = 0) -> np.ndarray:
    """A base64 PNG (grayscale or colour, 28x28) as 784 float32 pixels in [0, 1]; colour becomes 8-bit luminance."""
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
            gray = np.asarray(img.convert("L"), dtype=np.float32)
    except InvalidInput:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError) for bad files
        raise InvalidInput(f"image {index} is not a readable PNG ({type(exc).__name__})") from None
    return (gray / 255.0).reshape(INPUT_DIM)


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
    if any(isinstance(item, str) for item in value):
        x = np.stack([_one_image(item, i) for i, item in enumerate(value)])
    else:
        x = _as_rows(_numbers(value, "images"), "images")
    return check_pixels(x)


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
