"""Slow, vanishing and bulk clients through the ASGI app: a stalled body times out with 408 and never holds the
collectors back, a hang-up mid-upload is a 499 logged in one line, the body budget refuses the excess with 503, and
the probes answer HEAD. Bodies are fed message by message, as a server would hand them over."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from tests.serving import serve

pytestmark = pytest.mark.anyio

ONE_IMAGE = orjson.dumps({"images": [[0.5] * 784]})


class Upload:
    """One request driven by hand: `feed(chunk)` delivers body bytes, `hang_up()` a disconnect; `reply()` waits for
    the status, headers and body the app sent."""

    def __init__(self, app, path: str, length: int | None, content_type: bytes = b"application/json") -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                      "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                      "headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {}}
        self.messages: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []
        self.task = asyncio.create_task(app(self.scope, self.messages.get, self._send))

    async def _send(self, message: dict) -> None:
        self.sent.append(message)

    def feed(self, chunk: bytes, more: bool = True) -> None:
        self.messages.put_nowait({"type": "http.request", "body": chunk, "more_body": more})

    def hang_up(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})

    async def reply(self) -> tuple[int, dict[str, str], dict]:
        await asyncio.wait_for(self.task, 10)
        start = self.sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, orjson.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def test_stalled_body_gets_408_with_the_connection_closed(artifacts_dir):
    async with serve(artifacts_dir, body_timeout_s=0.3) as client:
        upload = Upload(client.app, "/encode", len(ONE_IMAGE))
        upload.feed(ONE_IMAGE[:100])  # then nothing more
        status, headers, body = await upload.reply()
        assert status == 408 and body["type"] == "request_timeout" and "0.3 s" in body["detail"]
        assert headers["connection"] == "close"
        assert client.app.state.service.bodies.budget.in_flight == 0  # its reservation was released
        assert (await client.post("/encode", content=ONE_IMAGE)).status_code == 200


async def test_a_stalled_upload_is_not_work_on_its_way(artifacts_dir):
    # An hour of batch delay: if the stalled upload counted as arriving work, the lone request would wait for it.
    async with serve(artifacts_dir, max_batch_delay_ms=1000) as client:
        activity = client.app.state.service.activity
        upload = Upload(client.app, "/encode", len(ONE_IMAGE))
        upload.feed(ONE_IMAGE[:100])
        await asyncio.sleep(0.05)
        assert not activity.busy
        r = await asyncio.wait_for(client.post("/encode", content=ONE_IMAGE), 0.9)
        assert r.status_code == 200
        upload.feed(ONE_IMAGE[100:], more=False)
        status, _, _ = await upload.reply()
        assert status == 200


@pytest.mark.parametrize("length", [len(ONE_IMAGE), None], ids=["content-length", "chunked"])
async def test_hang_up_mid_upload_is_499_logged_once_without_traceback(artifacts_dir, caplog, length):
    async with serve(artifacts_dir) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            upload = Upload(client.app, "/encode", length)
            upload.feed(ONE_IMAGE[:100])
            upload.hang_up()
            status, _, body = await upload.reply()
        assert status == 499 and body["type"] == "client_closed_request"
        lines = [r for r in caplog.records if r.levelno >= logging.INFO and "/encode" in r.getMessage()]
        assert len(lines) == 1 and "499" in lines[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)
        metrics = (await client.get("/metrics")).text
        assert 'latentserve_requests_total{endpoint="/encode",status="499"} 1.0' in metrics
        assert 'status="500"' not in metrics
        assert 'latentserve_rejections_total{reason="client_closed"} 1.0' in metrics


async def test_bodies_beyond_the_budget_are_refused_with_503_and_dropped(artifacts_dir):
    big = orjson.dumps({"images": [[0.5] * 784] * 4})  # ~13 kB
    async with serve(artifacts_dir, max_inflight_body_bytes=len(big) + len(ONE_IMAGE)) as client:
        budget = client.app.state.service.bodies.budget
        first = Upload(client.app, "/encode", len(big))
        first.feed(big[:10])
        await asyncio.sleep(0.05)
        assert budget.in_flight == len(big)
        second = Upload(client.app, "/encode", len(big))  # declares more than the budget has left
        second.feed(big[:5000])
        await asyncio.sleep(0.05)
        assert budget.in_flight == len(big)  # refused: what arrives is dropped, never kept
        second.feed(big[5000:], more=False)
        status, headers, body = await second.reply()
        assert status == 503 and body["type"] == "overloaded" and int(headers["retry-after"]) >= 1
        small = await client.post("/encode", content=ONE_IMAGE)  # fits in what is left
        assert small.status_code == 200
        first.feed(big[10:], more=False)
        status, _, body = await first.reply()
        assert status == 200 and len(body["mean"]) == 4
        assert budget.in_flight == 0
        metrics = (await client.get("/metrics")).text
        assert 'latentserve_rejections_total{reason="body_budget"} 1.0' in metrics


async def test_one_body_is_always_let_in_however_large(artifacts_dir):
    big = orjson.dumps({"images": [[0.5] * 784] * 4})
    async with serve(artifacts_dir, max_inflight_body_bytes=1024) as client:
        r = await client.post("/encode", content=big)
        assert r.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/"])
async def test_probes_answer_head(client, path):
    # The protocol's probes and the page answered 405 to HEAD (docs/api.md says the probes take it).
    r = await client.head(path)
    assert r.status_code == 200 and r.content == b""
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert path == "/" or list(paths[path]) == ["get"]  # one operation each
