"""The service must run without the training stack: importing it may not pull in pyro, torchvision or training/."""

from __future__ import annotations

import subprocess
import sys


def test_the_serving_app_imports_no_training_package():
    code = (
        "import sys, service.__main__\n"
        "service.__main__.serving_app()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyro', 'training', 'torchvision'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"service.app imported {result.stdout.strip()} {result.stderr[-2000:]}"
