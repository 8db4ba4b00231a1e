"""Following one request: its ID (`X-Request-ID`, taken from the client when sane, generated otherwise), the W3C trace
context it came with, the requests in flight (the autoscaling signal), and, once it is answered, its count and time
in the metrics and its access line.

`RequestMiddleware` (pure ASGI, outermost) opens a `RequestRecord` per request and makes it the current one for the
request's task (a context variable), so that the error bodies (service.errors), the log (service.logs), the tracing
span (service.tracing) and the plumbing (model, version, operation, batch size, queue wait) all read and fill the same
record, the status it was answered with included.
"""

from __future__ import annotations

import re
import time
from contextvars import ContextVar
from random import getrandbits
from typing import TYPE_CHECKING

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.keys import KEY_SCOPE

if TYPE_CHECKING:  # service.metrics imports the batcher, which imports service.errors, which imports this module
    from service.logs import AccessLog
    from service.metrics import Metrics

HEADER = "X-Request-ID"
_HEADER = HEADER.lower().encode()
_MAX_ID_CHARS = 128
_SANE_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces: safe to echo in a header and a log line
# W3C Trace Context, version 00: version-traceid-parentid-flags, lower-case hex, neither id all zeros.
_TRACEPARENT = re.compile(rb"[\da-f]{2}-([\da-f]{32})-([\da-f]{16})-[\da-f]{2}")


class RequestRecord:
    """What the log says about one request; the handler's plumbing fills what it learns on the way."""

    __slots__ = ("request_id", "trace_id", "model", "version", "operation", "batch_size", "queue_wait_s",
                 "admitted", "received_at", "span", "status")

    def __init__(self, request_id: str, trace_id: str | None) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.model: str | None = None
        self.version: int | None = None
        self.operation: str | None = None
        self.batch_size: int | None = None
        self.queue_wait_s: float | None = None
        self.admitted = False  # counted in the requests in flight
        self.received_at = 0.0  # time.monotonic() (the event loop's clock) at admission, before the body is read
        self.span = None  # the request's span when tracing is on (service.tracing)
        self.status = 500  # the status it was answered with, once the answer has started; 500 until then


_current: ContextVar[RequestRecord | None] = ContextVar("latentserve_request", default=None)


def current() -> RequestRecord | None:
    """The record of the request this task is serving; None outside a request."""
    return _current.get()


def current_request_id() -> str | None:
    record = _current.get()
    return None if record is None else record.request_id


def new_request_id() -> str:
    """128 random bits as 32 hex digits (Mersenne Twister, seeded from the OS: an ID needs to be unique, not secret,
    and this costs a tenth of uuid4's system call)."""
    return f"{getrandbits(128):032x}"


def sane_request_id(value: bytes | None) -> str | None:
    """The client's ID when it is printable ASCII without spaces and at most 128 characters, else None."""
    if value is None or len(value) > _MAX_ID_CHARS or not _SANE_ID.fullmatch(value):
        return None
    return value.decode()


def trace_id_of(traceparent: bytes | None) -> str | None:
    """The trace ID of a valid W3C `traceparent` (version 00 and later versions' first four fields), else None."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None or traceparent.startswith(b"ff") or not int(match[1], 16) or not int(match[2], 16):
        return None
    return match[1].decode()


def admitted(record: RequestRecord | None, metrics: Metrics) -> None:
    """The request has passed its queue's admission: counted in flight until it is answered."""
    if record is not None and not record.admitted:
        record.admitted = True
        record.received_at = time.monotonic()
        metrics.in_flight += 1


def endpoint(scope: Scope) -> str:
    """The path template of the route that served the request (the router leaves it in the scope), or of the one it
    was meant for when a middleware answered before routing (401, 408, 413); "other" when no route matches."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in scope["app"].router.routes if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", None) or "other"


class RequestMiddleware:
    """Gives every HTTP request its ID and record, returns the ID on every response, counts the admitted requests in
    flight, and once the request is answered counts and times it by path template, status and key (the metrics) and
    writes its access line when an access log is given (service.logs). Pure ASGI: no BaseHTTPMiddleware overhead."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access: AccessLog | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = traceparent = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                given = value
            elif name == b"traceparent":
                traceparent = value
        record = RequestRecord(sane_request_id(given) or new_request_id(), trace_id_of(traceparent))
        _current.set(record)  # each request runs in its own task, and so its own context
        header = (_HEADER, record.request_id.encode())
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message["headers"], header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            if record.admitted:
                self.metrics.in_flight -= 1
            path = endpoint(scope)
            self.metrics.observe_request(path, record.status, seconds)
            key = scope.get(KEY_SCOPE)  # (key id, scopes), left by the auth middleware
            if key is not None and key[0] is not None:
                self.metrics.observe_key(key[0], record.status)
            if self.access is not None:
                self.access(record, scope["method"], path, seconds)
