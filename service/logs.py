"""The service's log on stderr: readable text (the default, `make serve`'s), or with LATENTSERVE_LOG_FORMAT=json one
JSON object per line, both for the service's own events (any stdlib logger: service.*, uvicorn, torch) and for an
access line per request. structlog renders both: its ProcessorFormatter for stdlib records, and its processors called
directly, writing straight to stderr's bytes, for the access lines, the hot path (no stdlib record, no handler lock,
no bound logger). Each line carries the ID of the request it happened in (service.observe).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO

import orjson
import structlog
from starlette.types import Scope

from service import observe
from service.metrics import endpoint
from service.settings import Settings

AccessLog = Callable[[Scope, observe.RequestRecord, int, float], None]
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(request)s"
# Seconds since the epoch, as a float: an ISO 8601 string costs measurably more per access line (BENCHMARKS.md,
# "access log and request IDs").
_TIME = structlog.processors.TimeStamper(fmt=None, key="time")


def _dumps(obj: dict, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()


def _request_fields(_logger: object, _method: str, event: dict) -> dict:
    """The current request's ID and trace ID, on a line logged while serving it."""
    record = observe.current()
    if record is not None:
        event.setdefault("request_id", record.request_id)
        if record.trace_id is not None:
            event.setdefault("trace_id", record.trace_id)
    return event


class _RequestText(logging.Filter):
    """The text format's counterpart: ` request_id=...` at the end of a line logged while serving a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = observe.current_request_id()
        record.request = "" if request_id is None else f" request_id={request_id}"
        return True


def configure(settings: Settings, stream: IO[str] | None = None) -> None:
    """Process-wide, once, before uvicorn starts (service.__main__): the root logger's one handler, on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_TIME, structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                               _request_fields],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=_dumps)]))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
        handler.addFilter(_RequestText())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def access_log(settings: Settings, stream: IO[bytes] | None = None) -> AccessLog | None:
    """The access line writer of service.observe's middleware with the JSON format; None (no access lines) with text,
    as before. The line goes through structlog's own processors (timestamp, JSON renderer on orjson) called directly,
    not through a bound logger: its level filter and processor loop cost twice the rendering (BENCHMARKS.md, "access
    log and request IDs"), and an access line is always written."""
    if settings.log_format != "json":
        return None
    out = stream or sys.stderr.buffer
    render = structlog.processors.JSONRenderer(orjson.dumps)

    def write(scope: Scope, record: observe.RequestRecord, status: int, seconds: float) -> None:
        # error for a 500 (a bug, its traceback logged beside it); a 503 or a 4xx is the service working as meant
        level = "error" if status == 500 else "info"
        fields = {"request_id": record.request_id, "method": scope["method"], "path": endpoint(scope),
                  "status": status, "duration_ms": round(seconds * 1e3, 3)}
        if record.trace_id is not None:
            fields["trace_id"] = record.trace_id
        if record.model is not None:
            fields.update(model=record.model, version=record.version, operation=record.operation)
        if record.batch_size:
            fields.update(batch_size=record.batch_size, queue_wait_ms=round(record.queue_wait_s * 1e3, 3))
        fields.update(event="access", level=level)
        out.write(render(None, level, _TIME(None, level, fields)) + b"\n")
        out.flush()

    return write
