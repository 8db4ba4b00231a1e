"""Inputs to arrays and request bodies, replies back to arrays. Images arrive as numpy arrays ((N, 784),
(N, 28, 28) or one image; uint8 0-255 or float 0-1), PIL images, PNG paths or PNG bytes, or a list mixing them; they
leave as one .npy body (the fast path) or a JSON list. Pillow is imported only when a PIL image or PNG is decoded
here; without it, PNGs travel as base64 strings in a JSON body and the server decodes them. Pixel ranges are the
server's rule to check, not this module's."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentserve_client.errors import InvalidInput

SIDE = 28
PIXELS = SIDE * SIDE
NPY = "application/x-npy"
JSON = "application/json"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ImageLike = np.ndarray | bytes | str | os.PathLike | Any  # Any: a PIL.Image.Image, not imported here
Images = ImageLike | Sequence[ImageLike]


@dataclass(frozen=True)
class ImageBatch:
    """N images, either as one array (N, 784) of uint8 or float32, or (when some are PNGs that cannot be decoded
    here) as a list of items, each a (784,) array or PNG bytes."""

    array: np.ndarray | None
    items: list[np.ndarray | bytes] | None = None

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.items)

    def slice(self, start: int, stop: int) -> ImageBatch:
        if self.array is not None:
            return ImageBatch(self.array[start:stop])
        return ImageBatch(None, self.items[start:stop])

    def npy(self) -> bytes:
        """The .npy body (only for a batch held as one array; a batch of items goes as JSON)."""
        return npy_bytes(self.array)

    def json_images(self) -> list:
        """The JSON `images` list: floats in [0, 1], or base64 PNG strings."""
        if self.array is not None:
            return _floats(self.array).tolist()
        return [base64.b64encode(item).decode() if isinstance(item, bytes) else _floats(item).tolist()
                for item in self.items]


def npy_bytes(array: np.ndarray) -> bytes:
    """The array as a .npy file: numpy's header, then the data joined to it in one copy (np.save into a BytesIO
    copies it twice)."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join((header.getvalue(), memoryview(array).cast("B")))


def read_npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def json_body(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _floats(array: np.ndarray) -> np.ndarray:
    return array / np.float32(255.0) if array.dtype == np.uint8 else array


def _pixels(array: np.ndarray, single: bool) -> np.ndarray:
    """(N, 784) uint8 or float32 from an array of one image (784,) / (28, 28) or many (N, 784) / (N, 28, 28)."""
    if array.dtype != np.uint8:
        if array.dtype.kind != "f":
            raise InvalidInput(f"image arrays must be uint8 (0-255) or float (0-1), not {array.dtype}")
        array = array.astype(np.float32, copy=False)
    shape = array.shape
    if shape in ((PIXELS,), (SIDE, SIDE)):
        return array.reshape(1, PIXELS)
    if not single and (array.ndim == 2 and shape[1] == PIXELS or array.ndim == 3 and shape[1:] == (SIDE, SIDE)):
        return array.reshape(len(array), PIXELS)
    raise InvalidInput(f"images must be (N, 784), (N, 28, 28), (784,) or (28, 28); got shape {shape}")


def _is_pil(obj: object) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _png_bytes(obj: object) -> bytes | None:
    """The PNG bytes of a path or of bytes, or None when obj is neither."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        if not data.startswith(_PNG_MAGIC):
            raise InvalidInput("image bytes must be a PNG file")
        return data
    if isinstance(obj, (str, os.PathLike)):
        return Path(obj).read_bytes()
    return None


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def pil_pixels(img: Any) -> np.ndarray:
    """(784,) uint8 of a 28x28 PIL image (colour becomes 8-bit luminance, as the server does)."""
    if img.size != (SIDE, SIDE):
        raise InvalidInput(f"images must be 28x28 pixels; got {img.size[0]}x{img.size[1]}")
    return np.asarray(img.convert("L"), dtype=np.uint8).reshape(PIXELS)


def _decode_png(data: bytes, image_module) -> np.ndarray:
    with image_module.open(io.BytesIO(data), formats=["PNG"]) as img:
        return pil_pixels(img)


def image_batch(images: Images) -> ImageBatch:
    """Any accepted input as an ImageBatch; arrays stay as they are (no copy for a uint8 or float32 (N, 784))."""
    if isinstance(images, np.ndarray):
        return ImageBatch(_pixels(images, single=False))
    one = _one(images)
    if one is not None:
        return _batch([one])
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise InvalidInput(f"cannot read images from a {type(images).__name__}")
    if not images:
        raise InvalidInput("send at least one image")
    if not any(isinstance(item, (np.ndarray, bytes, bytearray, str, os.PathLike)) or _is_pil(item) for item in images):
        # Plain nested numbers, as JSON would carry them: one image (784 or 28 x 28) or rows of images.
        return ImageBatch(_pixels(np.asarray(images, dtype=np.float32), single=False))
    return _batch([_item(item) for item in images])


def _item(obj: object) -> np.ndarray | bytes:
    one = _one(obj)
    return one if one is not None else _pixels(np.asarray(obj, dtype=np.float32), single=True)[0]


def _one(obj: object) -> np.ndarray | bytes | None:
    """One image as (784,) pixels or PNG bytes; None when obj is not a single image of those kinds."""
    if isinstance(obj, np.ndarray):
        return _pixels(obj, single=True)[0]
    if _is_pil(obj):
        return pil_pixels(obj)
    return _png_bytes(obj)


def _batch(items: list[np.ndarray | bytes]) -> ImageBatch:
    """One array when every item is (or can be decoded here to) pixels; else the list, for a JSON body."""
    if any(isinstance(item, bytes) for item in items):
        image_module = _pillow()
        if image_module is None:
            return ImageBatch(None, items)
        items = [_decode_png(item, image_module) if isinstance(item, bytes) else item for item in items]
    if all(item.dtype == np.uint8 for item in items):
        return ImageBatch(np.stack(items))
    return ImageBatch(np.stack([_floats(item).astype(np.float32, copy=False) for item in items]))


def latents(values: np.ndarray | Sequence) -> np.ndarray:
    """(N, K) float32 from (N, K) or one code (K,)."""
    z = np.asarray(values, dtype=np.float32)
    if z.ndim == 1:
        z = z.reshape(1, -1)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise InvalidInput(f"latents must be (N, K) or one code (K,); got shape {z.shape}")
    return z


def as_images(rows: np.ndarray | list) -> np.ndarray:
    """(N, 28, 28) float32 from the service's (N, 784) pixel rows."""
    x = np.asarray(rows, dtype=np.float32)
    return x.reshape(len(x), SIDE, SIDE)


def grid(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) in [0, 1] as one uint8 image tiling them row by row in a near-square grid."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    tiles = np.zeros((rows * cols, SIDE, SIDE), np.uint8)
    tiles[:n] = np.rint(np.clip(images, 0.0, 1.0) * 255.0)
    return tiles.reshape(rows, cols, SIDE, SIDE).transpose(0, 2, 1, 3).reshape(rows * SIDE, cols * SIDE)
