"""Synthetic MNIST for tests: four small IDX files whose images have a per-digit structure (a bright bar whose
position follows the label, plus noise), so that models can learn something in a few steps."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from training import data

_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, as training.data.parse_idx reads it


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Writes a uint8 array as an IDX file (gzipped when asked)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    content = bytes([0, 0, _IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    Path(path).write_bytes(gzip.compress(content, mtime=0) if compress else content)
    return Path(path)


def fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) uint8: noise plus a bar at rows 2 + 2 * label, so each digit has its own pattern."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28))
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row : row + 3, 4:24] = rng.integers(200, 256, size=(3, 20))
    return images.astype(np.uint8)


def write_fake_mnist(folder: Path, n_train: int = 600, n_test: int = 200, compress: bool = True,
                     seed: int = 0) -> dict[str, tuple[str, str]]:
    """Writes the four files into folder; returns the FILES-like table (stem, SHA-256 of the content)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        arrays[f"{split}_labels"], arrays[f"{split}_images"] = labels, fake_images(labels, rng)
    expected = {}
    for key, (stem, _) in data.FILES.items():
        path = write_idx(folder / (stem + (".gz" if compress else "")), arrays[key], compress=compress)
        content = _content(path)
        expected[key] = (stem, hashlib.sha256(content).hexdigest())
    return expected


def _content(path: Path) -> bytes:
    import gzip

    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def shapes_for(n_train: int, n_test: int) -> dict[str, tuple[int, ...]]:
    return {"train_images": (n_train, 28, 28), "train_labels": (n_train,), "test_images": (n_test, 28, 28),
            "test_labels": (n_test,)}


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of synthetic MNIST (600 train, 200 test) that load_mnist accepts: FILES and SHAPES are patched."""
    folder = tmp_path / "mnist"
    monkeypatch.setattr(data, "FILES", write_fake_mnist(folder))
    monkeypatch.setattr(data, "SHAPES", shapes_for(600, 200))
    monkeypatch.delenv("MNIST_DIR", raising=False)
    return folder
