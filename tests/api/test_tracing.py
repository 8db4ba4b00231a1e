"""OpenTelemetry tracing (service.tracing) with the SDK's in-memory exporter: a span per request continuing the
caller's trace, its children (body, queue wait, batch compute) and one span per batch linked to all its requests;
off, no middleware at all."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service import tracing
from service.app import create_app
from service.settings import Settings
from tests.helpers import IMAGES
from tests.serving import block, serve

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

pytestmark = pytest.mark.anyio
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


async def test_requests_and_their_shared_batch_are_traced(artifacts_dir, exporter):
    async with serve(artifacts_dir) as client:
        gate = block(client)  # the first batch holds the compute thread; the next three queue and share one batch
        queue = client.app.state.service.registry.get("vae", 1).batchers["encode"]
        entered, gated = threading.Event(), queue.fn

        def computing(parts):
            entered.set()
            return gated(parts)

        queue.fn = computing
        first = asyncio.ensure_future(client.post("/encode", json={"images": IMAGES[:1].tolist()}))
        for _ in range(500):  # bounded: until the first batch is on the compute thread
            if entered.is_set():
                break
            await asyncio.sleep(0.01)
        headers = [{"traceparent": f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"}, {}, {}]
        rest = [asyncio.ensure_future(client.post("/encode", json={"images": IMAGES[:2].tolist()}, headers=h))
                for h in headers]
        for _ in range(500):
            if queue.queued_items == 6:
                break
            await asyncio.sleep(0.01)
        gate.set()
        replies = await asyncio.gather(first, *rest)
    assert [r.status_code for r in replies] == [200] * 4
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "POST /encode"]
    assert len(requests) == 4
    traced = next(s for s in requests if s.context.trace_id == TRACE_ID)
    assert traced.parent.span_id == PARENT_ID and traced.attributes["http.response.status_code"] == 200
    assert traced.attributes["latentserve.request_id"] == replies[1].headers["x-request-id"]
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == traced.context.span_id}
    assert set(children) == {"read and parse body", "queue wait", "batch compute"}
    body, wait, compute = children["read and parse body"], children["queue wait"], children["batch compute"]
    assert traced.start_time <= body.start_time <= body.end_time <= wait.start_time + 1000  # ns; clock conversion
    assert wait.end_time <= compute.start_time + 1000 and compute.end_time <= traced.end_time
    assert compute.attributes["latentserve.batch_size"] == 6
    batches = [s for s in spans if s.name == "batch vae/1/encode"]
    shared = next(b for b in batches if b.attributes["latentserve.batch_size"] == 6)
    assert shared.parent is None and shared.attributes["latentserve.batch_requests"] == 3
    alone = min(requests, key=lambda s: s.start_time)  # the first request, in a batch of its own
    assert {link.context.span_id for link in shared.links} == {s.context.span_id for s in requests if s is not alone}
    assert [link.context.span_id for link in compute.links] == [shared.context.span_id]


def test_without_a_tracer_no_middleware_is_added(artifacts_dir):
    assert tracing.tracer is None
    app = create_app(Settings(artifacts_dir=artifacts_dir))
    assert tracing.TracingMiddleware not in [m.cls for m in app.user_middleware]


@pytest.mark.parametrize("environ, wanted", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "latentserve"}, False),  # names the service, exports nowhere
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, False),
])
def test_tracing_is_on_only_when_the_otel_variables_ask(environ, wanted):
    assert tracing.wanted(environ) is wanted


def test_the_environment_configures_a_tracer(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    try:
        tracing.configure_from_environment()
        assert tracing.tracer is not None
    finally:
        tracing.use(None)
