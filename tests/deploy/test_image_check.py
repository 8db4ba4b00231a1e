"""The parts of deploy/image_check.py that need no engine: what counts as a forbidden path in the image, the size
breakdown, and the committed artifacts the image must serve unchanged (their manifests' SHA-256 hold in the repo)."""

from __future__ import annotations

import json

from deploy.image_check import forbidden, largest, repo_artifacts
from tests.deploy.common import ROOT

SITE = "/opt/venv/lib/python3.11/site-packages"


def test_forbidden_flags_what_a_serving_image_must_not_hold():
    bad = ["/app/tests/api/test_encode.py", "/src/.git/HEAD", f"{SITE}/_pytest/python.py", "/opt/venv/bin/hadolint",
           f"{SITE}/pip/__init__.py", f"{SITE}/numpy/_core/tests/test_umath.py", "/home/app/.cache/pip/http/x",
           "/root/.cache/uv/y", "/tmp/torch-2.14.1-cp311-cp311-linux_x86_64.whl", f"{SITE}/pyro/__init__.py",
           f"{SITE}/torchvision/__init__.py", f"{SITE}/torchvision-0.29.1.dist-info/METADATA"]
    found = forbidden(bad)
    assert {path for paths in found.values() for path in paths} == set(bad), found


def test_forbidden_passes_what_the_server_needs():
    good = [f"{SITE}/torch/testing/_comparison.py", f"{SITE}/torch/__pycache__/functional.cpython-311.pyc",
            f"{SITE}/numpy/testing/__init__.py", "/usr/local/bin/pip", "/usr/lib/python3/dist-packages/pip/x.py",
            "/app/artifacts/vae/1/manifest.json", "/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl",
            f"{SITE}/service/routes.py", f"{SITE}/pipdeptree_x/a.py"]
    assert forbidden(good) == {}


def test_largest_sums_folders_at_the_asked_depth():
    files = [(5, "/a/x/1"), (7, "/a/x/2"), (3, "/a/y/1"), (1, "/a/top"), (100, "/b/z")]
    assert largest(files, "/a", 1) == [("x", 12), ("y", 3), ("(files)", 1)]
    assert largest(files, "", 1) == [("b", 100), ("a", 16)]


def test_the_committed_artifacts_match_their_manifests():
    files = repo_artifacts()
    manifests = [k for k in files if k.endswith("/manifest.json")]
    assert manifests
    for key in manifests:
        folder = key.rsplit("/", 1)[0]
        listed = json.loads((ROOT / "artifacts" / key).read_text())["files"]
        assert listed and all(files[f"{folder}/{name}"] == sha for name, sha in listed.items()), folder
