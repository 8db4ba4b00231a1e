"""Process-wide tuning happens once, in the serving process, never as a side effect of building or serving a test app."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
import torch

from service.runtime import freeze_heap, tune_process
from tests.serving import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_test_app_leaves_the_process_tuning_alone(artifacts_dir):
    before = (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads())
    async with serve(artifacts_dir, torch_threads=1) as client:
        assert (await client.post("/encode", json={"images": [[0.5] * 784]})).status_code == 200
    assert (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads()) == before


def test_the_serving_app_tunes_the_process_once_its_models_load(artifacts_dir):
    # A child process: what the module-level app (python -m service, uvicorn service.app:app) does to its process.
    code = f"""
import asyncio, gc, torch
from service.settings import Settings
import service.app

async def main():
    app = service.app.create_app(Settings(artifacts_dir={str(artifacts_dir)!r}, torch_threads=1),
                                 serving_process=True)
    async with app.router.lifespan_context(app):
        await app.state.service.initial_load
        await asyncio.sleep(0)  # the done-callback runs on the next loop turn
        print(gc.get_threshold()[0], gc.get_freeze_count() > 1000, torch.get_num_threads())

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["20000", "True", "1"]


def test_tune_process_and_freeze_heap_do_what_they_say(monkeypatch):
    monkeypatch.setattr(gc, "set_threshold", lambda *a: calls.append(("threshold", a)))
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(("freeze",)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    calls: list = []
    assert tune_process(3) == 3
    freeze_heap()
    assert calls == [("threads", 3), ("threshold", (20_000, 10, 10)), ("freeze",)]
