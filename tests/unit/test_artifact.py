"""The artifact format: round trip, checksum verification, version numbering, atomic writes."""

import json
import os
from pathlib import Path

import pytest
import torch

from lvm.artifact import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    list_versions,
    load_artifact,
    read_manifest,
    scan,
    write_artifact,
)
from tests import factories


def _write(root: Path, model=None, name="vae", extras=None) -> Path:
    model = model or factories.mlp("vae")
    return write_artifact(root, name, model, factories.manifest(), extras)


def test_round_trip_rebuilds_identical_model(tmp_path):
    model = factories.mlp("vae")
    path = _write(tmp_path, model)
    artifact = load_artifact(path)
    rebuilt = artifact.build()
    x = torch.rand(4, 784)
    for a, b in zip(model.encode(x), rebuilt.encode(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (artifact.name, artifact.version, artifact.kind) == ("vae", 1, "vae")
    manifest = artifact.manifest
    assert manifest["format_version"] == FORMAT_VERSION and manifest["latent_dim"] == factories.LATENT_DIM
    assert manifest["input_shape"] == [28, 28] and set(manifest["files"]) == {WEIGHTS_FILE}


def test_ppca_round_trip_keeps_derived_maps(tmp_path):
    model = factories.ppca()
    rebuilt = load_artifact(_write(tmp_path, model, name="pca")).build()
    x = torch.rand(5, 784)
    torch.testing.assert_close(model.reconstruct(x, torch.zeros(5, 2))[0], rebuilt.reconstruct(x, torch.zeros(5, 2))[0])


def test_versions_are_numbered_and_never_overwritten(tmp_path):
    first, second = _write(tmp_path), _write(tmp_path, factories.mlp("vae", seed=1))
    assert (first.name, second.name) == ("1", "2")
    assert list_versions(tmp_path / "vae") == [1, 2]
    assert read_manifest(second)["version"] == 2
    assert [(n, v) for n, v, _ in scan(tmp_path)] == [("vae", 1), ("vae", 2)]


def test_interrupted_write_leaves_no_version(tmp_path):
    def crash(folder: Path) -> None:
        (folder / "report").mkdir()
        (folder / "report" / "half.png").write_bytes(b"\x89PNG")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, extras=crash)
    assert list_versions(tmp_path / "vae") == []
    assert list((tmp_path / "vae").iterdir()) == []


def test_extra_files_are_hashed(tmp_path):
    path = _write(tmp_path, extras=lambda d: (d / "notes.txt").write_text("hello"))
    assert "notes.txt" in read_manifest(path)["files"]
    (path / "notes.txt").write_text("tampered")
    with pytest.raises(ArtifactError, match="notes.txt fails its SHA-256"):
        load_artifact(path)


def test_tampered_weights_are_refused(tmp_path):
    path = _write(tmp_path)
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_artifact(path)


def test_missing_file_is_refused(tmp_path):
    path = _write(tmp_path)
    os.remove(path / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("kind"), "'kind' missing"),
        (lambda m: m.update(latent_dim="2"), "'latent_dim' must be an integer"),
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
        (lambda m: m.update(kind="gan"), "unknown kind"),
        (lambda m: m.update(version=7), "manifest says vae/7"),
        (lambda m: m.update(input_shape=[32, 32]), "input_shape"),
        (lambda m: m.update(files={"../../etc/passwd": "0", WEIGHTS_FILE: "0"}), "outside the artifact"),
    ],
)
def test_invalid_manifest_is_refused_with_reason(tmp_path, edit, message):
    path = _write(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    edit(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)


def test_unparseable_manifest_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(path)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    path = _write(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["architecture"]["hidden"] = [64, 16]
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="do not match the architecture"):
        load_artifact(path).build()


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must match"):
        _write(tmp_path, name="../escape")


def test_a_name_with_a_trailing_newline_is_neither_written_nor_scanned(tmp_path):
    # NAME_PATTERN ended in "$", which matches before a final newline: a folder "pcb\n" loaded as a model whose
    # name then broke every header it went into.
    with pytest.raises(ValueError, match="must match"):
        _write(tmp_path, name="pcb\n")
    path = _write(tmp_path, name="pcb")
    os.rename(path.parent, tmp_path / "pcb\n")
    assert list(scan(tmp_path)) == []
