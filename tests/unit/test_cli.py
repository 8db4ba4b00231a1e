"""`python -m training` end to end on synthetic MNIST: fit prints the new version, evaluate reproduces its figures,
and bad input ends in one line on stderr with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lvm
from training.__main__ import main

TINY_NET = ["--hidden", "16", "--epochs", "2", "--batch-size", "64", "--valid-size", "100", "--num-threads", "1"]
REQUIRED = {"format_version", "name", "version", "kind", "latent_dim", "input_shape", "likelihood", "architecture",
            "created_at", "training", "data", "metrics", "software", "files"}


def _fit(capsys, data_dir: Path, artifacts: Path, *flags: str) -> Path:
    code = main(["fit", "--data-dir", str(data_dir), "--artifacts-dir", str(artifacts), *flags])
    out = capsys.readouterr().out
    assert code == 0
    return Path(out.strip().splitlines()[-1])


@pytest.mark.parametrize(("kind", "flags"), [
    ("ppca", ["--valid-size", "100"]),
    ("ae", TINY_NET),
    ("vae", [*TINY_NET, "--iwae-samples", "20", "--iwae-images", "30", "--kl-warmup-epochs", "1"]),
])
def test_fit_writes_a_complete_artifact_and_evaluate_reproduces_it(capsys, fake_mnist, tmp_path, kind, flags):
    path = _fit(capsys, fake_mnist, tmp_path / "artifacts", "--kind", kind, "--name", "m", "--latent-dim", "2", *flags)
    assert path == tmp_path / "artifacts" / "m" / "1"
    artifact = lvm.load_artifact(path)
    manifest = artifact.manifest
    assert REQUIRED <= manifest.keys() and manifest["kind"] == kind
    assert manifest["data"]["sha256_uncompressed"] and manifest["data"]["split"]["valid"] == 100
    assert manifest["training"]["config"]["latent_dim"] == 2 and "wall_time_s" in manifest["training"]
    # Training runs where `--device auto` (the default) finds itself; this machine has no CUDA in the test run.
    expected_device = "cuda:0" if kind != "ppca" and torch.cuda.is_available() else "cpu"
    assert manifest["training"]["device"] == expected_device
    if kind != "ppca":
        assert manifest["training"]["config"]["device"] == "auto"
    assert manifest["architecture"] == artifact.build().architecture()
    umask = os.umask(0o022)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in path.rglob("*") if p.is_file()} == {0o666 & ~umask}  # not 0600
    assert {"python", "torch", "pyro", "git_commit"} <= manifest["software"].keys()
    assert {f"report/{n}.png" for n in ("latent", "reconstructions", "samples", "manifold")} <= manifest["files"].keys()
    artifact.build()

    assert main(["evaluate", str(path), "--data-dir", str(fake_mnist)]) == 0
    recomputed = json.loads(capsys.readouterr().out)
    assert recomputed.keys() == manifest["metrics"].keys()
    for key, value in manifest["metrics"].items():
        assert recomputed[key] == pytest.approx(value, rel=1e-5), key


def test_a_second_fit_gets_the_next_version(capsys, fake_mnist, tmp_path):
    flags = ("--kind", "ppca", "--latent-dim", "3", "--valid-size", "100")
    first = _fit(capsys, fake_mnist, tmp_path, *flags)
    second = _fit(capsys, fake_mnist, tmp_path, *flags)
    assert (first.name, second.name) == ("1", "2") and first.parent.name == "pca"


@pytest.mark.parametrize(("argv", "message"), [
    (["fit", "--kind", "ae", "--kl-warmup-epochs", "3"], "does not take --kl-warmup-epochs"),
    (["fit", "--kind", "vae", "--epochs", "0"], "epochs must be at least 1"),
    (["fit", "--kind", "ppca", "--name", "Bad Name"], "model name"),
    (["fit", "--kind", "ppca", "--name", "pcb\n"], "model name"),  # "$" let a trailing newline through
    (["fit", "--kind", "vae", "--lr", "inf"], "lr must be in (0, 1]"),
    (["fit", "--kind", "ae", "--lr", "1e30"], "lr must be in (0, 1]"),
    (["fit", "--kind", "ae", "--lr", "nan"], "lr must be in (0, 1]"),
    (["evaluate", "/nonexistent/artifact"], "no manifest.json"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, fake_mnist, argv, message):
    assert main([*argv, "--data-dir", str(fake_mnist)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_missing_data_from_a_real_process_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "MNIST_DIR": ""}
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--kind", "ppca", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert "missing train-images-idx3-ubyte" in result.stderr and "--data-dir" in result.stderr
    assert result.stdout == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unwritable_destination_fails_before_training(capsys, fake_mnist, tmp_path, monkeypatch, where):
    # It trained to the end, then died with a traceback (FileExistsError, NotADirectoryError), losing the model.
    from training import pipeline

    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    monkeypatch.setattr(pipeline, "train", lambda *a: pytest.fail("trained before checking the destination"))
    artifacts = blocker if where == "a file" else blocker / "artifacts"
    assert main(["fit", "--kind", "ppca", "--valid-size", "100", "--data-dir", str(fake_mnist),
                 "--artifacts-dir", str(artifacts)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "blocker" in err and "\n" not in err


@pytest.mark.parametrize("missing", ["matplotlib", "pyro"])
def test_a_missing_train_set_is_one_line_naming_the_command(tmp_path, missing):
    """`make serve` installs the runtime set only: training then finds no matplotlib or pyro (a fresh process, with
    the module made unimportable)."""
    script = (f"import sys; sys.modules[{missing!r}] = None; from training.__main__ import main; "
              f"sys.exit(main(['fit', '--kind', 'vae', '--data-dir', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "make install-train" in done.stderr and missing in done.stderr, done.stderr


def test_help_shows_the_defaults_and_the_activations(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS default: 60 (ae, vae, cvae)" in text and "default: 1000 (vae, cvae)" in text
    assert "{softplus,relu,tanh}" in text and "see docs/artifacts.md" not in text
