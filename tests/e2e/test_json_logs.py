"""`python -m service` with LATENTSERVE_LOG_FORMAT=json: every line the process writes, uvicorn's included, parses
back as one JSON object, and a request is followed by its ID from its answer to its one access line."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import orjson
import pytest

pytestmark = pytest.mark.slow


def test_every_line_is_json_and_a_request_is_found_by_its_id(live_server, tmp_path):
    proc, url = live_server(log_format="json", drain_grace_s=0)
    log = tmp_path / "server-0.log"
    r = httpx.post(f"{url}/encode", json={"images": [[0.0] * 784]}, timeout=30,
                   headers={"X-Request-ID": "e2e-follow", "traceparent":
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "e2e-follow"
    deadline = time.monotonic() + 10
    while b"e2e-follow" not in log.read_bytes() and time.monotonic() < deadline:  # the line follows the answer
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert all(isinstance(line, dict) and line["time"] and line["level"] for line in lines)
    mine = [line for line in lines if line.get("request_id") == "e2e-follow"]
    assert len(mine) == 1 and mine[0]["event"] == "access"
    assert mine[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert (mine[0]["path"], mine[0]["status"], mine[0]["model"], mine[0]["batch_size"]) == ("/encode", 200, "vae", 1)
    loggers = {line.get("logger") for line in lines}
    assert "uvicorn.error" in loggers and "uvicorn.access" not in loggers  # uvicorn's own lines, its access log off
    assert any(line.get("event") == "access" and line["path"] == "/readyz" for line in lines)


def test_no_access_line_is_lost_when_the_process_stops_under_load(live_server, tmp_path):
    """Access lines go out once per event-loop turn (service.logs): those of the last turns before SIGTERM too."""
    proc, url = live_server(log_format="json", drain_grace_s=0)
    log = tmp_path / "server-0.log"
    ids = [f"burst-{i}" for i in range(64)]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            replies = await asyncio.gather(*(client.post("/encode", json={"images": [[0.0] * 784]},
                                                         headers={"X-Request-ID": i}) for i in ids))
        proc.send_signal(signal.SIGTERM)  # at once, as the last answers arrive
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * len(ids)
    proc.wait(30)
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    logged = [line["request_id"] for line in lines if line.get("event") == "access"]
    assert sorted(i for i in logged if i.startswith("burst-")) == sorted(ids)
