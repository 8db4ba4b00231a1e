"""Artifacts a careless or hostile hand made: manifests that ask for huge networks or disagree with their weights, odd
version folder names, leftovers of killed writers, file modes."""

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from lvm.architecture import MAX_LATENT_DIM, MAX_WIDTH, build_model, weight_shapes
from lvm.artifact import MANIFEST_FILE, ArtifactError, list_versions, load_artifact, parse_version, write_artifact
from lvm.staging import STALE_AFTER_S, TMP_PREFIX
from tests import factories


def _write(root: Path, model=None, name="vae") -> Path:
    return write_artifact(root, name, model or factories.mlp("vae"), factories.manifest())


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    edit(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def _no_tensor_reads(monkeypatch) -> None:
    """Fails the test if a tensor is read, or a network built anywhere but on the meta device (shapes only)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read before the manifest was checked")

    build = factories.MLPModel.__init__

    def meta_only(self, *args, **kwargs):
        assert torch.get_default_device().type == "meta", "a network was built before the manifest was checked"
        build(self, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(factories.MLPModel, "__init__", meta_only)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda a: a.update(latent_dim=30000), f"latent_dim must be an integer in \\[1, {MAX_LATENT_DIM}\\]"),
    (lambda a: a.update(hidden=[10**6, 16]), f"hidden widths must lie in \\[1, {MAX_WIDTH}\\]"),
    (lambda a: a.update(hidden=[4096] * 8), "parameters, more than the limit"),
    (lambda a: a.update(hidden=[16] * 9), "at most 8 hidden layers"),
    (lambda a: a.update(hidden="32"), "hidden must be a list of integers"),
])
def test_oversized_architecture_is_refused_before_anything_is_built(tmp_path, monkeypatch, edit, message):
    path = _write(tmp_path)
    _edit_manifest(path, lambda m: (edit(m["architecture"]), m.update(latent_dim=m["architecture"]["latent_dim"])))
    _no_tensor_reads(monkeypatch)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)


def test_architecture_within_bounds_but_not_the_weights_is_refused_from_the_header(tmp_path, monkeypatch):
    path = _write(tmp_path)
    _edit_manifest(path, lambda m: (m["architecture"].update(latent_dim=300, hidden=[4000, 4000]),
                                    m.update(latent_dim=300)))
    _no_tensor_reads(monkeypatch)
    with pytest.raises(ArtifactError, match=r"decoder.0.weight has shape \[16, 2\], the architecture needs \[4000, 300\]"):
        load_artifact(path)


def test_manifest_whose_activation_differs_from_the_weights_is_refused(tmp_path):
    path = _write(tmp_path)  # softplus
    _edit_manifest(path, lambda m: m["architecture"].update(activation="relu"))
    with pytest.raises(ArtifactError, match="activation 'relu' \\(written: 'softplus'\\)"):
        load_artifact(path)


def test_architecture_fields_the_model_would_not_say_are_refused():
    model = factories.mlp("vae")
    arch = {**model.architecture(), "output": "gaussian"}
    with pytest.raises(ValueError, match="output \\('gaussian'; a vae model has 'bernoulli_logits'\\)"):
        build_model("vae", arch, model.state_dict())
    with pytest.raises(ValueError, match="scale_head"):
        build_model("vae", {**model.architecture(), "scale_head": None}, model.state_dict())


def test_wrong_likelihood_is_refused(tmp_path):
    path = _write(tmp_path)
    _edit_manifest(path, lambda m: m.update(likelihood="gaussian"))
    with pytest.raises(ArtifactError, match="likelihood 'gaussian'"):
        load_artifact(path, verify=False).build()


def test_the_model_describes_itself_in_the_manifest(tmp_path):
    model = factories.mlp("ae")
    manifest = load_artifact(_write(tmp_path, model, name="ae")).manifest
    assert manifest["architecture"] == model.architecture() and manifest["likelihood"] == "bernoulli"
    assert weight_shapes("ae", model.architecture()) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("text", ["²", "١", "01", "0", "1.0", " 1", "1234567890", "", "+1"])
def test_only_ascii_versions_parse(text):
    assert parse_version(text) is None


def test_odd_version_folders_are_skipped_with_one_line_each(tmp_path, caplog):
    _write(tmp_path)
    for odd in ("²", "١", "01", "latest"):
        (tmp_path / "vae" / odd).mkdir()
    (tmp_path / "vae" / f"{TMP_PREFIX}abc").mkdir()
    with caplog.at_level(logging.WARNING, logger="lvm.artifact"):
        assert list_versions(tmp_path / "vae") == [1]
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 4 and not any(TMP_PREFIX in line for line in skipped)
    assert _write(tmp_path).name == "2"


def _leftover(name_dir: Path, age_s: float) -> Path:
    leftover = name_dir / f"{TMP_PREFIX}dead"
    leftover.mkdir(parents=True)
    (leftover / "weights.safetensors").write_bytes(b"half")
    os.utime(leftover, (time.time() - age_s, time.time() - age_s))
    return leftover


def test_leftovers_of_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    leftover = _leftover(tmp_path / "vae", STALE_AFTER_S + 60)
    assert list_versions(tmp_path / "vae") == []
    _write(tmp_path)
    assert not leftover.exists() and sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["1"]


def test_a_live_writers_folder_is_left_alone(tmp_path):
    live = _leftover(tmp_path / "vae", STALE_AFTER_S + 60)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
        _write(tmp_path)
        assert live.exists()
    finally:
        os.close(fd)
    young = _leftover(tmp_path / "ae", 0)  # unlocked but just made: its writer may not have locked it yet
    _write(tmp_path, factories.mlp("ae"), name="ae")
    assert young.exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        path = write_artifact(tmp_path, "vae", factories.mlp("vae"), factories.manifest(),
                              lambda d: (d / "report").mkdir() or (d / "report" / "a.png").write_bytes(b"png"))
    finally:
        os.umask(before)
    modes = {p.relative_to(path).as_posix(): p.stat().st_mode & 0o777 for p in path.rglob("*") if p.is_file()}
    assert modes == dict.fromkeys(["manifest.json", "weights.safetensors", "report/a.png"], mode)


def test_a_model_beyond_the_bounds_is_not_written(tmp_path):
    with torch.device("meta"):
        model = factories.MLPModel("vae", MAX_LATENT_DIM + 1, [8])
    with pytest.raises(ValueError, match="latent_dim"):
        write_artifact(tmp_path, "vae", model, factories.manifest())
