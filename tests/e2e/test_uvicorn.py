"""The real thing: `python -m service` (uvicorn) on a free loopback port over tiny artifacts. Concurrent requests
are batched (seen in /metrics), and SIGTERM lets a request already in flight finish before the process exits."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import until

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(live_server, tmp_path):
    proc, url = live_server()
    return proc, url, tmp_path / "server-0.log"


def largest_batch(metrics: str) -> int:
    """The upper bound of the highest non-empty latentserve_batch_size bucket of vae/encode."""
    counts = {float(le): float(n) for le, n in re.findall(
        r'latentserve_batch_size_bucket\{le="([0-9.]+)",model="vae",operation="encode",version="1"\} ([0-9.]+)',
        metrics)}
    total = max(counts.values(), default=0.0)
    return int(min((le for le, n in counts.items() if n == total), default=0))


async def test_concurrent_requests_are_batched(server):
    _, url, _ = server
    body = {"images": [np.random.default_rng(0).random(784).tolist()]}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(20):
            replies = await asyncio.gather(*(client.post("/encode", json=body) for _ in range(64)))
            assert all(r.status_code == 200 for r in replies)
            means = np.array([r.json()["mean"] for r in replies])
            np.testing.assert_allclose(means, means[:1].repeat(64, axis=0), atol=1e-5)  # batching changes nothing
            if largest_batch((await client.get("/metrics")).text) > 1:
                break
        assert largest_batch((await client.get("/metrics")).text) > 1


async def test_sigterm_lets_the_request_in_flight_finish(server):
    proc, url, log = server
    sent_half = asyncio.Event()

    async def slow_body():
        yield b'{"images": [' + b",".join([b"[" + b",".join([b"0.5"] * 784) + b"]"] * 32)
        sent_half.set()
        # The rest of the body is still on its way when uvicorn itself starts shutting down (after the drain grace).
        await until(lambda: "Shutting down" in log.read_text(), timeout_s=20)
        yield b"]}"

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        request = asyncio.create_task(client.post("/reconstruct", content=slow_body(),
                                                  headers={"content-type": "application/json"}))
        await asyncio.wait_for(sent_half.wait(), 10)
        proc.send_signal(signal.SIGTERM)  # the drain grace (3 s) leaves the server time to read what was sent
        reply = await request
    assert reply.status_code == 200 and len(reply.json()["images"]) == 32
    assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "draining" in text and "Traceback" not in text
