"""Process-wide effects (torch threads, the collector, signal handlers) happen once, in the serving process
(service.__main__), never as a side effect of importing service.app or of building or serving a test app."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys

import pytest
import torch

from tests.serving import serve

pytestmark = pytest.mark.anyio


def _process_state() -> tuple:
    return (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads(),
            signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))


async def test_a_test_app_leaves_the_process_alone(artifacts_dir):
    before = _process_state()
    async with serve(artifacts_dir, torch_threads=1) as client:
        assert (await client.post("/encode", json={"images": [[0.5] * 784]})).status_code == 200
        assert _process_state() == before  # while it serves, too: no signal handler swapped in
    assert _process_state() == before


def test_the_serving_app_tunes_its_process_once_its_models_load_and_importing_builds_nothing(artifacts_dir):
    # A child process: what `python -m service` and `uvicorn service.app:app` do to the process they run in.
    code = f"""
import asyncio, gc, signal, torch
import service.app
assert "app" not in vars(service.app), "importing service.app built an app"
before = signal.getsignal(signal.SIGTERM)
from service.__main__ import serving_app
from service.settings import Settings

async def main():
    app = serving_app(Settings(artifacts_dir={str(artifacts_dir)!r}, torch_threads=1))
    async with app.router.lifespan_context(app):
        await app.state.service.initial_load
        await asyncio.sleep(0)  # the done-callback runs on the next loop turn
        hooked = signal.getsignal(signal.SIGTERM) is not before
        print(gc.get_threshold()[0], gc.get_freeze_count() > 1000, torch.get_num_threads(), hooked)
    print(signal.getsignal(signal.SIGTERM) is before)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["20000", "True", "1", "True", "True"]
