"""The MNIST loader: formats, split, checksums, and a clear DataError for every bad file."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from tests.fixtures_mnist import shapes_for, write_fake_mnist, write_idx
from training import data
from training.data import DataError, load_mnist, parse_idx


def test_loads_gzipped_files_as_floats_in_unit_range(fake_mnist):
    mnist = load_mnist(fake_mnist, valid_size=100)
    assert mnist.train.x.shape == (500, 784) and mnist.valid.x.shape == (100, 784)
    assert mnist.test.x.shape == (200, 784) and mnist.test.y.shape == (200,)
    assert mnist.train.x.dtype == torch.float32
    assert 0.0 <= mnist.train.x.min() and mnist.train.x.max() <= 1.0
    raw = np.frombuffer(gzip.decompress((fake_mnist / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    assert torch.equal(mnist.test.x.flatten(), torch.from_numpy(raw.astype(np.float32) / 255.0))


def test_uncompressed_files_give_the_same_data(fake_mnist, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in fake_mnist.iterdir():
        (plain / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    a, b = load_mnist(fake_mnist, valid_size=100), load_mnist(plain, valid_size=100)
    assert torch.equal(a.train.x, b.train.x) and a.checksums == b.checksums


def test_split_is_fixed_by_its_seed_and_disjoint(fake_mnist):
    a, b, c = (load_mnist(fake_mnist, valid_size=100, split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.valid.x, b.valid.x) and not torch.equal(a.valid.x, c.valid.x)
    everything = torch.cat([a.train.x, a.valid.x])
    assert len(torch.unique(everything, dim=0)) == 600
    assert a.describe()["split"] == {"seed": 0, "train": 500, "valid": 100, "test": 200,
                                     "valid_from": "train (random permutation, fixed seed)"}


def test_checksums_are_recorded(fake_mnist):
    mnist = load_mnist(fake_mnist, valid_size=100)
    assert mnist.checksums == {stem: sha for stem, sha in data.FILES.values()}
    assert mnist.describe()["sha256_uncompressed"] == mnist.checksums


def test_mnist_dir_is_used_when_no_folder_is_given(fake_mnist, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(fake_mnist))
    assert load_mnist(valid_size=100).source == str(fake_mnist)


def test_wrong_checksum_is_refused(fake_mnist, monkeypatch):
    files = dict(data.FILES)
    files["test_labels"] = (files["test_labels"][0], "0" * 64)
    monkeypatch.setattr(data, "FILES", files)
    with pytest.raises(DataError, match="SHA-256 .* expected 0000"):
        load_mnist(fake_mnist, valid_size=100)


def test_real_checksums_refuse_other_files(tmp_path):
    write_fake_mnist(tmp_path, n_train=60, n_test=10)
    with pytest.raises(DataError, match="not the standard MNIST file"):
        load_mnist(tmp_path, valid_size=10)


def test_missing_file_says_which_and_how_to_fix(fake_mnist):
    (fake_mnist / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte .*--data-dir"):
        load_mnist(fake_mnist, valid_size=100)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_corrupt_gzip_is_refused(fake_mnist):
    path = fake_mnist / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="cannot be read or decompressed"):
        load_mnist(fake_mnist, valid_size=100)


def test_wrong_shape_is_refused(fake_mnist, monkeypatch):
    monkeypatch.setattr(data, "SHAPES", shapes_for(700, 200))
    with pytest.raises(DataError, match=r"shape \(600, 28, 28\), expected \(700, 28, 28\)"):
        load_mnist(fake_mnist, valid_size=100)


def test_valid_size_must_leave_training_images(fake_mnist):
    with pytest.raises(DataError, match="valid_size"):
        load_mnist(fake_mnist, valid_size=600)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "bad magic"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\x00" * 4, "element type"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x01\x02", "header promises 5"),
    ],
)
def test_parse_idx_rejects_malformed_content(content, message):
    with pytest.raises(DataError, match=message):
        parse_idx(content)


def test_write_and_parse_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (False, True):
        path = write_idx(tmp_path / f"a{compress}", array, compress=compress)
        raw = path.read_bytes()
        content = gzip.decompress(raw) if compress else raw
        assert np.array_equal(parse_idx(content, path, (2, 3, 4)), array)


def test_offline_download_gives_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "DEFAULT_CACHE", tmp_path / "cache")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="downloading MNIST into .* failed .*network is unreachable"):
        load_mnist()


def test_download_cache_is_reused_without_network(fake_mnist, tmp_path, monkeypatch):
    raw = tmp_path / "cache" / "MNIST" / "raw"
    shutil.copytree(fake_mnist, raw)
    monkeypatch.setattr(data, "DEFAULT_CACHE", tmp_path / "cache")
    assert load_mnist(valid_size=100).source == str(raw)
