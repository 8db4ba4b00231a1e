"""`python -m service` on a port another process holds: one error line and exit status 3, before the app starts, so
no start-up, loading or drain lines (docs/troubleshooting.md quotes this output)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_a_port_in_use_is_one_line_and_exit_3(artifacts_template):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {**os.environ, "LATENTSERVE_HOST": "127.0.0.1", "LATENTSERVE_PORT": str(holder.getsockname()[1]),
               "LATENTSERVE_ARTIFACTS_DIR": str(artifacts_template),
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        done = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 3
    assert len(lines) == 1 and "ERROR:" in lines[0] and "Address already in use" in lines[0], lines
