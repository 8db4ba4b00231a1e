"""Readiness over the app's life: 503 with nothing loaded, 200 once warm, 503 at once on SIGTERM while requests
already received still finish."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests import factories
from tests.serving import block, serve

pytestmark = pytest.mark.anyio


async def test_empty_artifacts_folder_starts_unready_until_a_reload_finds_models(tmp_path):
    async with serve(tmp_path) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["type"] == "unavailable" and "retry-after" in r.headers
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.post("/encode", json={"images": [[0.0] * 784]})).status_code == 503
        factories.write_defaults(tmp_path)
        await client.post("/admin/reload", json={})
        assert (await client.get("/readyz")).status_code == 200


async def test_sigterm_flips_readiness_at_once_and_in_flight_requests_finish(artifacts_dir):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))  # stands in for uvicorn
    try:
        async with serve(artifacts_dir, drain_grace_s=0.3) as client:
            gate = block(client)
            in_flight = asyncio.create_task(client.post("/encode", json={"images": [[0.5] * 784]}))
            while client.app.state.service.activity.computing == 0:
                await asyncio.sleep(0.01)
            signal.raise_signal(signal.SIGTERM)
            r = await client.get("/readyz")
            assert r.status_code == 503 and "draining" in r.json()["detail"]
            assert received == []  # the drain grace: the server keeps listening while probes see 503
            assert (await client.get("/healthz")).status_code == 200
            for _ in range(100):
                await asyncio.sleep(0.05)
                if received:
                    break
            assert received == [signal.SIGTERM]  # the server's own handler still runs, after the grace
            gate.set()
            assert (await in_flight).status_code == 200
    finally:
        signal.signal(signal.SIGTERM, previous)
