"""What only sockets show, on a real `python -m service`: a stalled upload gets 408 and its connection closed, a
client that hangs up mid-upload leaves one log line and a 499 in /metrics (no 500, no traceback), the probes
answer HEAD, and after SIGTERM /readyz answers 503 for the drain grace before the listener closes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import until

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
BODY = b'{"images": [[' + b",".join([b"0.5"] * 784) + b"]]}"


async def _open(url: str, length: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % length)
    await writer.drain()
    return reader, writer


def _unread_by_server(writer: asyncio.StreamWriter) -> int | None:
    """Bytes this connection sent that the server's socket holds unread (Linux's /proc/net/tcp rx_queue)."""
    ours = writer.get_extra_info("sockname")[1]
    server = writer.get_extra_info("peername")[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, remote, _, queues, *_ = line.split()
        if int(local.split(":")[1], 16) == server and int(remote.split(":")[1], 16) == ours:
            return int(queues.split(":")[1], 16)
    return None


async def test_stalled_uploads_time_out_and_hang_ups_are_499(live_server, tmp_path):
    _, url = live_server(body_timeout_s=1)
    reader, writer = await _open(url, len(BODY))
    writer.write(BODY[:50])  # and then nothing
    start = time.monotonic()
    reply = await asyncio.wait_for(reader.read(), 10)  # read() returns at EOF: the server closed the connection
    assert 0.9 < time.monotonic() - start < 5
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert b'"type":"request_timeout"' in body
    writer.close()

    reader, writer = await _open(url, len(BODY))
    writer.write(BODY[:50])
    await writer.drain()
    await until(lambda: _unread_by_server(writer) == 0)  # the server has the headers and the first 50 bytes
    writer.transport.abort()  # the client vanishes mid-upload
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path in ("/healthz", "/readyz"):
            r = await client.head(path)
            assert r.status_code == 200 and r.content == b""

        async def counted() -> str | None:
            text = (await client.get("/metrics")).text
            return text if 'status="499"' in text else None

        metrics = await until(counted, every_s=0.1)
    assert 'latentserve_requests_total{endpoint="/encode",status="499"} 1.0' in metrics
    assert 'latentserve_requests_total{endpoint="/encode",status="408"} 1.0' in metrics
    assert 'status="500"' not in metrics
    log = (tmp_path / "server-0.log").read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log
    assert sum("/encode: 499" in line for line in log.splitlines()) == 1


async def test_readyz_answers_503_through_the_drain_grace_then_the_listener_closes(live_server):
    proc, url = live_server(drain_grace_s=1.5)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        assert (await client.get("/readyz")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        seen, served = [], []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                seen.append((await client.get("/readyz")).status_code)
                served.append((await client.post("/encode", content=BODY,
                                                  headers={"content-type": "application/json"})).status_code)
            except httpx.TransportError:
                break  # the listener has closed
            await asyncio.sleep(0.05)
    assert seen.count(503) >= 5 and set(seen) <= {200, 503} and seen[-1] == 503
    assert set(served) == {200}  # requests are still served during the grace
    assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
