"""The `latentserve` command against the live service: JSON on stdout, PNG and .npy outputs, the environment
variables, and errors as one line on stderr with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from latentserve_client import Client
from latentserve_client.cli import main
from PIL import Image

from tests.client.common import API_KEY
from tests.helpers import IMAGES_U8, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(live, capsys, monkeypatch):
    """cli("encode", "a.png") -> (exit status, parsed stdout or None, stderr), with URL and key from the env."""
    monkeypatch.setenv("LATENTSERVE_URL", live.url)
    monkeypatch.setenv("LATENTSERVE_API_KEY", API_KEY)
    for name in ("LATENTSERVE_MODEL", "LATENTSERVE_VERSION"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*argv: str):
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, json.loads(out) if out.strip() else None, err

    return invoke


@pytest.fixture
def pngs(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"digit{i}.png")
        paths[-1].write_bytes(png_bytes(IMAGES_U8[i]))
    return paths


def test_encode_prints_the_posterior_as_json(cli, live, pngs):
    status, out, _ = cli("encode", *map(str, pngs))
    with Client(live.url, api_key=API_KEY) as client:
        expected = client.encode(IMAGES_U8[:2])
    assert status == 0 and (out["model"], out["version"]) == ("vae", 2)
    np.testing.assert_allclose(out["mean"], expected.mean, atol=1e-5)
    assert np.array(out["scale"]).shape == (2, 2)


def test_model_and_version_flags_and_their_environment_variables(cli, pngs, monkeypatch):
    assert cli("--model", "vae", "--version", "1", "encode", str(pngs[0]))[1]["version"] == 1
    monkeypatch.setenv("LATENTSERVE_VERSION", "1")
    assert cli("encode", str(pngs[0]))[1]["version"] == 1
    monkeypatch.setenv("LATENTSERVE_MODEL", "ae")
    monkeypatch.delenv("LATENTSERVE_VERSION")
    assert cli("encode", str(pngs[0]))[1]["scale"] is None


def test_decode_reconstruct_and_sample_write_pngs_and_npy(cli, pngs, tmp_path):
    status, out, _ = cli("decode", "0.5", "-1.2", "-o", str(tmp_path / "digit.png"))
    assert status == 0 and out["shape"] == [1, 28, 28]
    assert Image.open(tmp_path / "digit.png").size == (28, 28)
    status, out, _ = cli("reconstruct", str(pngs[0]), str(pngs[1]), "-o", str(tmp_path / "r.npy"))
    assert status == 0 and np.load(tmp_path / "r.npy").shape == (2, 28, 28)
    status, out, _ = cli("sample", "-n", "16", "--seed", "1", "-o", str(tmp_path / "grid.png"))
    assert status == 0 and Image.open(tmp_path / "grid.png").size == (112, 112)  # a 4 x 4 grid
    first = np.asarray(Image.open(tmp_path / "grid.png"))
    cli("sample", "-n", "16", "--seed", "1", "-o", str(tmp_path / "again.png"))
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again.png")))
    status, out, _ = cli("decode", "0", "0")
    assert status == 0 and np.array(out["images"]).shape == (1, 784)


def test_models_prints_the_servers_overview(cli):
    status, out, _ = cli("models")
    assert status == 0 and out["default_model"] == "vae"
    assert cli("model", "vae")[1]["name"] == "vae"


@pytest.mark.parametrize("argv, expected", [
    (["--api-key", "wrong", "models"], "latentserve: error: 401 unauthorized: missing or invalid API key"),
    (["decode", "1", "2", "3"], "latentserve: error: 422 invalid_input: latents must be rows of 2 numbers"),
    (["--model", "nope", "sample"], "latentserve: error: 404 unknown_model: model 'nope' is not loaded"),
    (["encode", "missing.png"], "latentserve: error: cannot read missing.png"),
])
def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(cli, argv, expected):
    status, out, err = cli(*argv)
    assert status == 1 and out is None
    assert err.startswith(expected) and err.count("\n") == 1


def test_python_dash_m_runs_the_same_command(live, pngs):
    env = {**os.environ, "LATENTSERVE_URL": live.url, "LATENTSERVE_API_KEY": API_KEY}
    done = subprocess.run([sys.executable, "-m", "latentserve_client", "encode", str(pngs[0])], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "vae"


@pytest.mark.parametrize("argv, expected", [
    (["sample", "-n", "1", "-o", "{tmp}/missing/grid.png"], "latentserve: error: cannot write "),
    (["sample", "-n", "1", "-o", "{tmp}"], "latentserve: error: cannot write "),
    (["sample", "-n", "1", "-o", "{tmp}/missing/grid.npy"], "latentserve: error: cannot write "),
    (["--api-key", "clé", "models"], "latentserve: error: invalid_argument: the API key must be printable ASCII"),
    (["sample", "--seed", str(2**63)], "latentserve: error: 422 invalid_input: seed must be an integer in [0, 2^63)"),
])
def test_output_and_argument_failures_are_one_line_too(cli, tmp_path, argv, expected):
    # Each was a traceback: FileNotFoundError, IsADirectoryError, UnicodeEncodeError; the seed was wrapped.
    status, out, err = cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert status == 1 and out is None
    assert err.startswith(expected) and err.count("\n") == 1, err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(cli, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli("--timeout", value, "models")
    assert exit_.value.code == 2 and "must be a positive number of seconds" in capsys.readouterr().err
