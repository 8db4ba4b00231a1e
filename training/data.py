"""MNIST from its four IDX files -> float32 (N, 784) in [0, 1], with a fixed train/valid split and the test set.

Owns finding the files (a folder, MNIST_DIR, or torchvision's downloader), checking their SHA-256 and turning every
problem into a DataError that says what was expected and how to fix it. Nothing here knows about models.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# SHA-256 of the uncompressed content of each standard file (gzip wrappers differ between copies, content does not).
FILES = {
    "train_images": ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
# Expected shapes of each file: (count, rows, cols) for images, (count,) for labels.
SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": (10000, 28, 28), "test_labels": (10000,)}
_IDX_UBYTE = 0x08
DEFAULT_CACHE = Path.home() / ".cache" / "latentserve" / "mnist"
_FIX = "point --data-dir (or MNIST_DIR) at a folder holding the four standard MNIST IDX files, gzipped or not"


class DataError(Exception):
    """The data cannot be used: missing, corrupt, wrong checksum or wrong shape. The message says how to fix it."""


@dataclass(frozen=True)
class Split:
    x: Tensor  # (N, 784) float32 in [0, 1]
    y: Tensor  # (N,) int64 digit labels


@dataclass(frozen=True)
class MNIST:
    train: Split
    valid: Split
    test: Split
    checksums: dict[str, str]  # file name -> SHA-256 of its uncompressed content
    source: str
    split_seed: int

    def describe(self) -> dict:
        """The manifest's `data` block."""
        return {
            "dataset": "mnist",
            "source": self.source,
            "sha256_uncompressed": self.checksums,
            "split": {
                "seed": self.split_seed,
                "train": len(self.train.y),
                "valid": len(self.valid.y),
                "test": len(self.test.y),
                "valid_from": "train (random permutation, fixed seed)",
            },
            "pixels": "x / 255 in [0, 1]",
        }


def load_mnist(
    data_dir: Path | str | None = None,
    valid_size: int = 5000,
    split_seed: int = 0,
    expected: dict[str, tuple[str, str]] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> MNIST:
    """Loads the four files from data_dir, else MNIST_DIR, else torchvision's download into the cache folder.

    `expected` and `shapes` override FILES and SHAPES (tests use small synthetic files); a checksum of None skips the
    check for that file.
    """
    expected = FILES if expected is None else expected
    shapes = SHAPES if shapes is None else shapes
    folder = resolve_data_dir(data_dir)
    arrays, checksums = {}, {}
    for key, (stem, sha256) in expected.items():
        path = _find_file(folder, stem)
        content = _read_bytes(path)
        digest = hashlib.sha256(content).hexdigest()
        if sha256 is not None and digest != sha256:
            raise DataError(
                f"{path}: SHA-256 of the uncompressed content is {digest}, expected {sha256}; the file is corrupt or "
                f"not the standard MNIST file: replace it ({_FIX})"
            )
        arrays[key] = parse_idx(content, path, shapes.get(key))
        checksums[stem] = digest
    if len(arrays["train_images"]) != len(arrays["train_labels"]):
        raise DataError(f"{folder}: {len(arrays['train_images'])} training images but {len(arrays['train_labels'])} labels")
    if len(arrays["test_images"]) != len(arrays["test_labels"]):
        raise DataError(f"{folder}: {len(arrays['test_images'])} test images but {len(arrays['test_labels'])} labels")
    n_train = len(arrays["train_labels"])
    if not 0 < valid_size < n_train:
        raise DataError(f"valid_size must be between 1 and {n_train - 1}, got {valid_size}")
    train_x, train_y = _to_tensors(arrays["train_images"], arrays["train_labels"])
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
    valid_idx, train_idx = perm[:valid_size].sort().values, perm[valid_size:].sort().values
    return MNIST(
        train=Split(train_x[train_idx], train_y[train_idx]),
        valid=Split(train_x[valid_idx], train_y[valid_idx]),
        test=Split(*_to_tensors(arrays["test_images"], arrays["test_labels"])),
        checksums=checksums,
        source=str(folder),
        split_seed=split_seed,
    )


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    """The folder to read: data_dir, else $MNIST_DIR, else the cache folder after torchvision's download."""
    if data_dir is None:
        data_dir = os.environ.get("MNIST_DIR") or None
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist; {_FIX}")
        return folder
    return download_mnist(DEFAULT_CACHE)


def download_mnist(cache: Path) -> Path:
    """Downloads MNIST with torchvision into cache (once) and returns the folder holding the raw IDX files."""
    raw = cache / "MNIST" / "raw"
    if all(_candidates(raw, stem) for stem, _ in FILES.values()):
        return raw
    try:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        TorchvisionMNIST(root=str(cache), train=True, download=True)
        TorchvisionMNIST(root=str(cache), train=False, download=True)
    except Exception as exc:  # urllib, socket and torchvision's own errors all mean the same thing here
        raise DataError(
            f"no data folder given and downloading MNIST into {cache} failed ({type(exc).__name__}: {exc}); "
            f"{_FIX}, or run once with internet access"
        ) from None
    return raw


def _candidates(folder: Path, stem: str) -> list[Path]:
    return [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()]


def _find_file(folder: Path, stem: str) -> Path:
    found = _candidates(folder, stem)
    if not found:
        raise DataError(f"{folder}: missing {stem} (or {stem}.gz); {_FIX}")
    return found[0]


def _read_bytes(path: Path) -> bytes:
    """The uncompressed content of path; gzip is recognised by its magic bytes, not by the name."""
    try:
        with open(path, "rb") as f:
            content = f.read()
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read or decompressed ({exc}); replace it ({_FIX})") from None
    return content


def parse_idx(content: bytes, path: Path | str = "<bytes>", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An IDX file of unsigned bytes -> uint8 array of its declared shape, checked against `shape` when given."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); {_FIX}")
    dtype, ndim = content[2], content[3]
    if dtype != _IDX_UBYTE:
        raise DataError(f"{path}: IDX element type 0x{dtype:02x}, expected unsigned bytes (0x08)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", content[4:header])
    if shape is not None and tuple(dims) != tuple(shape):
        raise DataError(f"{path}: shape {tuple(dims)}, expected {tuple(shape)}; {_FIX}")
    size = int(np.prod(dims))
    if len(content) - header != size:
        raise DataError(f"{path}: holds {len(content) - header} data bytes, header promises {size} (truncated?)")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or (labels.size and labels.max() > 9):
        raise DataError("labels must be one digit 0-9 per image")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))

