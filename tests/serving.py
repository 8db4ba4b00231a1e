"""Fixtures that serve the tiny artifacts: an app per test through httpx's ASGI transport with its lifespan
started (models loaded and warm before the first request), and a real uvicorn process for socket-level tests."""

from __future__ import annotations

import itertools
import threading
from contextlib import asynccontextmanager

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import start_server, stop_server


@asynccontextmanager
async def serve(artifacts_dir, process=None, **overrides):
    """A started app over `artifacts_dir` with `overrides` of its settings; `process` as in create_app.
    max_pass_ms=0: every queue batches up to 64 whatever this machine's speed, so splitting is deterministic."""
    settings = Settings(**{"artifacts_dir": artifacts_dir, "max_batch_size": 64, "max_items_per_request": 64,
                           "max_pass_ms": 0, **overrides})
    app = create_app(settings, process)
    async with app.router.lifespan_context(app):
        await app.state.service.initial_load
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            client.app = app
            yield client


@pytest.fixture
async def client(artifacts_dir):
    async with serve(artifacts_dir) as c:
        yield c


def block(client, model: str = "vae", version: int = 1, op: str = "encode") -> threading.Event:
    """Makes one batcher's function wait for the returned event (set it to let batches through)."""
    batcher = client.app.state.service.registry.get(model, version).batchers[op]
    gate, inner = threading.Event(), batcher.fn

    def gated(parts):
        gate.wait(30)
        return inner(parts)

    batcher.fn = gated
    return gate


@pytest.fixture
def live_server(artifacts_template, tmp_path):
    """A factory: `proc, url = live_server(api_key="k")` starts `python -m service` over the tiny artifacts (a real
    uvicorn on a free loopback port, ready), logging to tmp_path/server-<n>.log, n = 0, 1, ... in call order (also
    when called from several threads at once); every process it started is killed at teardown."""
    procs, numbers = [], itertools.count()

    def start(artifacts=None, **env):
        log = tmp_path / f"server-{next(numbers)}.log"
        proc, url = start_server(artifacts or artifacts_template, log, **env)
        procs.append(proc)
        return proc, url

    yield start
    for proc in procs:
        stop_server(proc)
