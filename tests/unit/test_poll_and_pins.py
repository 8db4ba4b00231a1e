"""The pieces of polling and pins, without a server: stat stamps (lvm.watch), the settle rule (service.poll), the
DEFAULT file (lvm.read_pin) and the choice of a model's default (service.registry.choose_default)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import lvm
from lvm import watch
from lvm.artifact import list_versions
from lvm.watch import snapshot
from service.poll import settled
from service.registry import Default, choose_default
from tests import factories


def test_snapshot_stamps_every_version_and_pin_and_skips_what_is_no_version(artifacts_dir):
    (artifacts_dir / "vae" / "DEFAULT").write_text("1\n")
    (artifacts_dir / "vae" / ".tmp-abc").mkdir()
    (artifacts_dir / "vae" / "01").mkdir()
    (artifacts_dir / "Not-a-name").mkdir()
    snap = snapshot(artifacts_dir)
    assert sorted(snap.versions) == [("ae", 1), ("cvae", 1), ("pca", 1), ("vae", 1)]
    assert set(snap.pins) == {"vae"}
    files = {path for path, _, _ in snap.versions[("vae", 1)]}
    assert {"manifest.json", "weights.safetensors"} <= files
    assert snap.complete(("vae", 1))


def test_a_change_of_size_or_mtime_changes_the_stamps(artifacts_dir):
    before = snapshot(artifacts_dir)
    weights = artifacts_dir / "pca" / "1" / "weights.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = snapshot(artifacts_dir)
    assert after.versions[("pca", 1)] != before.versions[("pca", 1)]
    assert after.versions[("vae", 1)] == before.versions[("vae", 1)]


def test_a_new_folder_is_pending_until_it_is_the_same_at_two_scans(artifacts_dir):
    first = snapshot(artifacts_dir)
    copy = artifacts_dir / "vae" / "2"
    copy.mkdir()  # a copy in progress: no manifest yet
    (copy / "weights.safetensors").write_bytes(b"\0" * 10)
    second = snapshot(artifacts_dir)
    view, pending = settled(first, second)
    assert pending == {("vae", 2)} and ("vae", 2) not in view[0]
    shutil.copy(artifacts_dir / "vae" / "1" / "manifest.json", copy / "manifest.json")
    third = snapshot(artifacts_dir)
    assert settled(second, third)[1] == {("vae", 2)}  # it changed since the last scan
    fourth = snapshot(artifacts_dir)
    view, pending = settled(third, fourth)
    assert pending == frozenset() and ("vae", 2) in view[0]


def test_a_folder_without_manifest_stays_pending_however_long_it_is_still(artifacts_dir):
    (artifacts_dir / "vae" / "2").mkdir()
    snap = snapshot(artifacts_dir)
    view, pending = settled(snap, snap)
    assert pending == {("vae", 2)} and set(view[0]) == {("ae", 1), ("cvae", 1), ("pca", 1), ("vae", 1)}


def test_a_folder_lacking_a_file_its_manifest_lists_stays_pending_however_long_it_is_still(artifacts_dir, tmp_path):
    # A copy that stalls between two files (a download to elsewhere, then a move) must not look settled.
    source = factories.copy_as_version(artifacts_dir / "vae" / "1", tmp_path / "vae-2", 2)
    copy = artifacts_dir / "vae" / "2"
    copy.mkdir()
    shutil.copy(source / "manifest.json", copy)
    snap = snapshot(artifacts_dir)
    assert not snap.complete(("vae", 2)) and "weights.safetensors" in snap.missing[("vae", 2)]
    assert settled(snap, snap)[1] == {("vae", 2)}
    shutil.copytree(source, copy, dirs_exist_ok=True)
    first, second = snapshot(artifacts_dir), snapshot(artifacts_dir)
    assert first.missing == {} and settled(first, second) == ((dict(second.versions), second.pins), frozenset())


def test_a_manifest_is_read_again_only_when_it_changes(artifacts_dir, monkeypatch):
    reads = []
    real = watch.read_manifest
    monkeypatch.setattr(watch, "read_manifest", lambda folder: reads.append(folder) or real(folder))
    listings = {}
    for _ in range(3):
        snapshot(artifacts_dir, listings)
    assert len(reads) == 4  # pca, ae, vae, cvae: once each
    manifest = artifacts_dir / "ae" / "1" / "manifest.json"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    snapshot(artifacts_dir, listings)
    assert len(reads) == 5 and reads[-1] == manifest.parent
    shutil.rmtree(artifacts_dir / "ae")
    snapshot(artifacts_dir, listings)
    assert ("ae", 1) not in listings


def test_a_half_written_manifest_leaves_nothing_to_wait_for(artifacts_dir):
    # The folder settles once still, and the loader refuses it with its reason.
    folder = artifacts_dir / "vae" / "2"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": {"weights.saf')
    snap = snapshot(artifacts_dir)
    assert snap.complete(("vae", 2)) and snap.missing == {}


def test_an_entry_outside_the_folder_is_not_waited_for(artifacts_dir, tmp_path):
    # The loader refuses it ("points outside the artifact"); waiting would hide that for ever.
    folder = factories.copy_as_version(artifacts_dir / "vae" / "1", artifacts_dir / "vae" / "2", 2)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["../outside.bin"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    snap = snapshot(artifacts_dir)
    assert snap.complete(("vae", 2)) and snap.missing == {}
    assert watch._inside("report/latent.png") and watch._inside("./weights.safetensors")
    assert not any(map(watch._inside, ["../x", "/etc/passwd", "report/../../x", ".."]))


def test_a_removed_version_leaves_the_settled_view(artifacts_dir):
    before = snapshot(artifacts_dir)
    shutil.rmtree(artifacts_dir / "ae" / "1")
    after = snapshot(artifacts_dir)
    view, pending = settled(before, after)
    assert pending == frozenset() and ("ae", 1) not in view[0] and view != settled(before, before)[0]


def test_a_pin_change_changes_the_view(artifacts_dir):
    before = snapshot(artifacts_dir)
    (artifacts_dir / "vae" / "DEFAULT").write_text("1\n")
    after = snapshot(artifacts_dir)
    assert settled(after, after)[0] != settled(before, before)[0]


@pytest.mark.parametrize("text, pin", [("2\n", 2), (" 17 ", 17), ("1", 1)])
def test_read_pin_reads_a_version_number(tmp_path, text, pin):
    (tmp_path / "DEFAULT").write_text(text)
    assert lvm.read_pin(tmp_path) == pin


def test_read_pin_without_the_file_is_none(tmp_path):
    assert lvm.read_pin(tmp_path) is None


@pytest.mark.parametrize("text", ["", "02", "two", "-1", "²", "1 2"])
def test_read_pin_refuses_what_is_not_a_version_number(tmp_path, text):
    (tmp_path / "DEFAULT").write_text(text)
    with pytest.raises(lvm.ArtifactError, match="DEFAULT holds"):
        lvm.read_pin(tmp_path)


def test_the_pin_file_is_no_version_and_the_next_version_ignores_it(artifacts_dir):
    (artifacts_dir / "vae" / "DEFAULT").write_text("7\n")
    assert list_versions(artifacts_dir / "vae") == [1]
    assert [v for name, v, _ in lvm.scan(artifacts_dir) if name == "vae"] == [1]
    assert factories.write(artifacts_dir, "vae", "vae", seed=5).name == "2"


def test_default_without_pin_is_the_highest():
    assert choose_default({1, 3, 2}, None, None, {}, None) == Default(3, "highest")


def test_default_follows_a_pin_to_a_loaded_version():
    assert choose_default({1, 2, 3}, 2, None, {}, Default(3, "highest")) == Default(2, "pinned", 2)


def test_a_pin_to_a_missing_version_keeps_the_previous_default_and_says_why():
    chosen = choose_default({1, 2, 3}, 7, None, {}, Default(2, "pinned", 2))
    assert (chosen.version, chosen.reason, chosen.pin) == (2, "previous", 7)
    assert chosen.pin_error == "DEFAULT pins version 7, which is not loaded (loaded: [1, 2, 3])"


def test_a_pin_to_a_refused_version_keeps_the_previous_default_and_gives_the_refusal():
    chosen = choose_default({1, 2}, 3, None, {3: "weights fail their SHA-256 check"}, Default(2, "highest"))
    assert (chosen.version, chosen.reason) == (2, "previous")
    assert chosen.pin_error == "DEFAULT pins version 3, which was refused: weights fail their SHA-256 check"


def test_an_unreadable_pin_keeps_the_previous_default():
    chosen = choose_default({1, 2}, None, "DEFAULT holds 'x', not a version number", {}, Default(1, "pinned", 1))
    assert (chosen.version, chosen.reason, chosen.pin_error) == (1, "previous", "DEFAULT holds 'x', not a version number")


def test_a_bad_pin_whose_previous_default_is_gone_falls_back_to_the_highest():
    chosen = choose_default({1, 2}, 9, None, {}, Default(3, "pinned", 3))
    assert (chosen.version, chosen.reason) == (2, "previous")
    assert choose_default({4}, 9, None, {}, None).version == 4
