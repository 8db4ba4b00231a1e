"""Following a request (service.observe, service.logs): its X-Request-ID on every response and in every error body
(the service's and the protocol's), the W3C trace ID carried into its access line, JSON log lines parsed back, and
the requests in flight gauge."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time

import orjson
import pytest

from service import logs
from service.observe import RequestRecord
from service.settings import Settings
from tests.helpers import IMAGES
from tests.serving import block, serve

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encode_body(n: int = 1) -> dict:
    return {"images": IMAGES[:n].tolist()}


def access_lines(text: str) -> list[dict]:
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "access"]


async def test_a_generated_id_is_on_every_response(client):
    ok = await client.post("/encode", json=encode_body())
    probe = await client.get("/healthz")
    assert ok.status_code == 200 and probe.status_code == 200
    ids = {ok.headers["x-request-id"], probe.headers["x-request-id"]}
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


@pytest.mark.parametrize("given, kept", [
    ("req-42/abc:XYZ", True),
    ("x" * 128, True),
    ("x" * 129, False),  # too long
    ("has space", False),
    ("caf\u00e9", False),  # not ASCII
    ("", False),
])
async def test_a_sane_client_id_is_kept_and_any_other_replaced(client, given, kept):
    r = await client.get("/healthz", headers={"X-Request-ID": given.encode("utf-8")})
    assert r.status_code == 200
    if kept:
        assert r.headers["x-request-id"] == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


async def test_every_error_body_carries_the_request_id(client):
    cases = [
        ("POST", "/encode", {"json": {"images": [[0.5] * 783]}}, 422, "detail"),
        ("POST", "/encode?model=nope", {"json": encode_body()}, 404, "detail"),
        ("GET", "/no/such/path", {}, 404, "detail"),
        ("POST", "/encode", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "detail"),
        ("POST", "/encode", {"content": b"{", "headers": {"content-length": str(1 << 30)}}, 413, "detail"),
        ("POST", "/v2/models/vae-encode/infer", {"json": {"inputs": []}}, 422, "error"),
        ("POST", "/v2/models/nope-encode/infer", {"json": {"inputs": []}}, 404, "error"),
    ]
    for i, (method, path, kwargs, status, key) in enumerate(cases):
        kwargs.setdefault("headers", {})["X-Request-ID"] = f"case-{i}"
        r = await client.request(method, path, **kwargs)
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert body[key] and body["request_id"] == f"case-{i}" == r.headers["x-request-id"], (path, body)


async def test_an_unauthorized_reply_carries_the_request_id(artifacts_dir):
    async with serve(artifacts_dir, api_key="k") as client:
        r = await client.post("/encode", json=encode_body(), headers={"X-Request-ID": "who-am-i"})
        v2 = await client.post("/v2/models/vae-encode/infer", json={}, headers={"X-Request-ID": "v2-who"})
    assert r.status_code == 401 and r.json()["request_id"] == "who-am-i" == r.headers["x-request-id"]
    assert v2.status_code == 401 and v2.json() == {"error": v2.json()["error"], "request_id": "v2-who"}


async def test_a_500_carries_the_request_id_in_its_body_and_header(artifacts_dir):
    async with serve(artifacts_dir) as client:
        client.app.state.service.registry.get("vae", 1).batchers["decode"].fn = _raise
        r = await client.post("/decode", json={"latents": [[0.0, 0.0]]}, headers={"X-Request-ID": "boom-1"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal", "type": "internal", "request_id": "boom-1"}
    assert r.headers["x-request-id"] == "boom-1"


def _raise(parts):
    raise RuntimeError("the device fell over")


async def test_json_access_lines_name_the_request_its_trace_and_its_batch(artifacts_dir, capsys):
    async with serve(artifacts_dir, log_format="json") as client:
        capsys.readouterr()  # the loading lines
        ok = await client.post("/encode?model=vae&version=1", json=encode_body(3),
                               headers={"X-Request-ID": "follow-me", "traceparent": TRACEPARENT})
        bad = await client.post("/encode", json={"images": [[2.0] * 784]})
        probe = await client.get("/healthz", headers={"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
        v2 = await client.post("/v2/models/ae-decode/infer", json={"inputs": [
            {"name": "latents", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}]})
    assert ok.status_code == 200 and bad.status_code == 422 and probe.status_code == 200 and v2.status_code == 200
    lines = {line["request_id"]: line for line in access_lines(capsys.readouterr().err)}
    first = lines["follow-me"]
    assert first["trace_id"] == TRACE_ID and first["level"] == "info" and first["status"] == 200
    assert (first["method"], first["path"], first["model"], first["version"], first["operation"]) == (
        "POST", "/encode", "vae", 1, "encode")
    assert first["batch_size"] >= 3 and first["queue_wait_ms"] >= 0 and first["duration_ms"] > 0
    assert abs(first["time"] - time.time()) < 60
    refused = lines[bad.headers["x-request-id"]]
    assert refused["status"] == 422 and "batch_size" not in refused and "trace_id" not in refused
    health = lines[probe.headers["x-request-id"]]
    assert health["path"] == "/healthz" and "trace_id" not in health and "model" not in health  # all-zero trace id
    protocol = lines[v2.headers["x-request-id"]]
    assert (protocol["path"], protocol["model"], protocol["operation"]) == (
        "/v2/models/{model_name}/infer", "ae", "decode")


class _Writes(io.BytesIO):
    """A byte stream that counts its writes; `fail` makes the next one raise."""

    def __init__(self) -> None:
        super().__init__()
        self.writes, self.fail = 0, False

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.fail:
            self.fail = False
            raise OSError("disk full")
        return super().write(data)


def _log_one(access: logs.AccessLog, request_id: str, status: int = 200) -> None:
    record = RequestRecord(request_id, None)
    record.status = status
    access(record, "GET", "/healthz", 0.0012345)


async def test_access_lines_of_one_loop_turn_go_out_in_one_write_at_its_end():
    out = _Writes()
    access = logs.access_log(Settings(log_format="json"), out)
    for i in range(5):
        _log_one(access, f"r{i}")
    assert out.writes == 0  # not before the turn ends
    await asyncio.sleep(0)
    assert out.writes == 1
    lines = access_lines(out.getvalue().decode())
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(5)]
    assert lines[0]["duration_ms"] == 1.235 and lines[0]["path"] == "/healthz" and lines[0]["level"] == "info"
    _log_one(access, "next", status=500)
    await asyncio.sleep(0)
    assert out.writes == 2 and access_lines(out.getvalue().decode())[-1]["level"] == "error"


async def test_a_failed_access_write_does_not_hold_its_lines_for_the_next():
    out = _Writes()
    access = logs.access_log(Settings(log_format="json"), out)
    _log_one(access, "lost")
    out.fail = True
    with pytest.raises(OSError):
        access.flush()
    _log_one(access, "kept")
    await asyncio.sleep(0)
    assert [line["request_id"] for line in access_lines(out.getvalue().decode())] == ["kept"]


def test_an_access_line_outside_an_event_loop_is_written_at_once():
    out = _Writes()
    _log_one(logs.access_log(Settings(log_format="json"), out), "direct")
    assert out.writes == 1 and access_lines(out.getvalue().decode())[0]["request_id"] == "direct"


async def test_text_format_writes_no_access_lines(client, capsys):
    assert (await client.get("/healthz")).status_code == 200
    assert '"access"' not in capsys.readouterr().err


def test_json_service_events_are_one_object_a_line():
    stream, root = io.StringIO(), logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(Settings(log_format="json", log_level="info"), stream)
        logging.getLogger("service.test").info("loaded %s version %d", "vae", 3)
        try:
            raise ValueError("bad weights")
        except ValueError:
            logging.getLogger("service.test").exception("refused")
        logging.getLogger("service.test").debug("below the level")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    loaded, refused = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert (loaded["event"], loaded["level"], loaded["logger"]) == ("loaded vae version 3", "info", "service.test")
    assert refused["level"] == "error" and "ValueError: bad weights" in refused["exception"]
    assert "request_id" not in loaded  # logged outside any request


async def test_in_flight_counts_admitted_requests_until_answered(artifacts_dir):
    async with serve(artifacts_dir) as client:
        gate = block(client)
        sent = [asyncio.ensure_future(client.post("/encode", json=encode_body())) for _ in range(3)]

        async def in_flight() -> float:
            text = (await client.get("/metrics")).text
            return float(re.search(r"^latentserve_requests_in_flight (\S+)$", text, re.M)[1])

        for _ in range(200):  # bounded: until the three are queued behind the gate
            if await in_flight() == 3:
                break
            await asyncio.sleep(0.01)
        assert await in_flight() == 3
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*sent)] == [200] * 3
        refused = await client.post("/encode", json={"images": [[2.0] * 784]})  # admitted, then refused: 422
        assert refused.status_code == 422 and await in_flight() == 0
