"""The client is its own distribution: it imports, and sends PNGs, with torch, the service's packages and Pillow all
unimportable (a meta-path blocker in a fresh interpreter)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.client.common import API_KEY
from tests.helpers import IMAGES_U8, png_bytes, reference, run

BLOCKED = ("torch", "torchvision", "service", "lvm", "training", "pyro", "fastapi", "starlette", "PIL")
BLOCKER = f"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocker())
"""


def python(code: str, tmp_path) -> str:
    done = subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_package_imports_without_torch_service_or_pillow(tmp_path):
    out = python("import latentserve_client, latentserve_client.cli\n"
                 f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}))", tmp_path)
    assert out.strip() == "[]"


@pytest.mark.slow
def test_png_bytes_without_pillow_travel_as_json_and_the_server_decodes_them(live, tmp_path):
    data = base64.b64encode(png_bytes(IMAGES_U8[0])).decode()
    out = python("import base64, json\nfrom latentserve_client import Client\n"
                 f"with Client({live.url!r}, api_key={API_KEY!r}, model='vae', version=1) as c:\n"
                 f"    print(json.dumps(c.encode(base64.b64decode({data!r})).mean.tolist()))", tmp_path)
    z_loc, _ = run(reference(live.artifacts, "vae", 1).encode, IMAGES_U8[:1].reshape(1, 784) / np.float32(255))
    np.testing.assert_allclose(np.array(json.loads(out)), z_loc.numpy(), atol=1e-5)
