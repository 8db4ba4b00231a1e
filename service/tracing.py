"""Optional OpenTelemetry tracing (`pip install .[otel]`), configured only by the standard OTEL_* variables.

A span per request (`TracingMiddleware`, continuing the caller's W3C `traceparent`), with children for reading and
parsing the body and for the queue wait, and one span per batch's compute, linked to every request in the batch (a
batch serves many traces at once, so it belongs to none of them); each request also gets a child covering its batch,
linked back to the batch's span. The children are written once the request's batch is back, from the times the
batcher keeps anyway. With the extra or the variables absent, `tracer` stays None: no middleware is added, and the
batcher and plumbing test one module attribute per request.
"""

from __future__ import annotations

import logging
import os
import time
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service import observe

if TYPE_CHECKING:
    from service.batcher import Pending

log = logging.getLogger("service.tracing")
tracer: Any = None  # an opentelemetry Tracer once use() or configure_from_environment() has run

_ENABLING = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Tracing is asked for: an exporter or an OTLP endpoint is named, and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENABLING)


def configure_from_environment() -> None:
    """Installs a tracer provider built from the OTEL_* variables (exporters by OTEL_TRACES_EXPORTER, the resource by
    OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, the sampler by OTEL_TRACES_SAMPLER, batching by OTEL_BSP_*), when
    they ask for tracing; says once why not when the extra is missing."""
    if not wanted():
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* variables are set but the OpenTelemetry SDK is not installed (pip install '.[otel]'); "
                    "tracing is off")
        return
    provider = TracerProvider(resource=Resource.create())
    for name in _exporter_names():
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            log.warning("no OpenTelemetry trace exporter named %r is installed; skipped", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(next(iter(found)).load()()))
    use(provider)


def _exporter_names() -> list[str]:
    """OTEL_TRACES_EXPORTER's names (default otlp); otlp is the HTTP/protobuf exporter unless the protocol is gRPC."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    otlp = "otlp_proto_grpc" if (protocol or "").strip() == "grpc" else "otlp_proto_http"
    return [otlp if n == "otlp" else n for n in names]


def use(provider: Any | None) -> None:
    """Traces with this provider from now on (tests pass one with an in-memory exporter); None turns tracing off."""
    global tracer
    tracer = None if provider is None else provider.get_tracer("latentserve")


class TracingMiddleware:
    """The request's span, a child of the caller's trace when it sent one; inside service.observe's middleware, whose
    record keeps the span for the batcher and the plumbing."""

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        self._extract, self._kind, self._error = propagate.extract, SpanKind.SERVER, Status(StatusCode.ERROR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        record = observe.current()
        with tracer.start_as_current_span(f"{scope['method']} {scope['path']}", context=self._extract(carrier),
                                          kind=self._kind) as span:
            if record is not None:
                record.span = span
                span.set_attribute("latentserve.request_id", record.request_id)
            try:
                await self.app(scope, receive, send)
            finally:
                # observe's middleware, outside this one, noted the status as the answer's start went out through it
                status = record.status if record is not None else 500
                route = observe.endpoint(scope)
                span.update_name(f"{scope['method']} {route}")
                span.set_attributes({"http.request.method": scope["method"], "http.route": route,
                                     "url.path": scope["path"], "http.response.status_code": status})
                if status >= 500:
                    span.set_status(self._error)


def current_span() -> Any:
    """The span of the request this task serves (None outside one), for the batcher to link its batch to."""
    record = observe.current()
    return None if record is None else record.span


def batch_span(name: str, batch: list[tuple[Pending, int, int]], rows: int) -> Any:
    """Starts the span of one batch's compute, linked to every traced request in it (each request's first batch
    keeps it, for the request's own child span)."""
    from opentelemetry.trace import Link

    links = [Link(p.span.get_span_context()) for p, _, _ in batch if p.span is not None]
    span = tracer.start_span(f"batch {name}", links=links,
                             attributes={"latentserve.batch_size": rows, "latentserve.batch_requests": len(batch)})
    for p, start, _ in batch:
        if not start:
            p.batch_span = span
    return span


def end_batch(span: Any, failed: bool = False) -> None:
    if failed:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
    span.end()


def request_spans(record: observe.RequestRecord, first: Pending) -> None:
    """The request's children, from the times it went through: body (admission to queueing), queue wait (queueing
    to its first batch's dispatch) and its batch (dispatch to now), the last linked to the batch's span."""
    from opentelemetry import trace
    from opentelemetry.trace import Link

    parent = trace.set_span_in_context(record.span)
    to_ns = _monotonic_to_epoch_ns()
    now = time.time_ns()
    for name, start, end in (("read and parse body", record.received_at, first.enqueued_at),
                             ("queue wait", first.enqueued_at, first.dispatched_at)):
        tracer.start_span(name, context=parent, start_time=to_ns(start)).end(end_time=to_ns(end))
    links = [] if first.batch_span is None else [Link(first.batch_span.get_span_context())]
    tracer.start_span("batch compute", context=parent, start_time=to_ns(first.dispatched_at), links=links,
                      attributes={"latentserve.batch_size": first.batch_rows}).end(end_time=now)


def _monotonic_to_epoch_ns():
    """Converts the event loop's clock (time.monotonic) to the epoch nanoseconds spans are stamped with."""
    offset_ns = time.time_ns() - time.monotonic_ns()
    return lambda t: int(t * 1e9) + offset_ns
