"""The service's log on stderr: readable text (the default, `make serve`'s), or with LATENTSERVE_LOG_FORMAT=json one
JSON object per line, both for the service's own events (any stdlib logger: service.*, uvicorn, torch) and for an
access line per request. structlog renders both: its ProcessorFormatter for stdlib records, and its processors called
directly for the access lines, the hot path (no stdlib record, no handler lock, no bound logger), written to stderr's
bytes once per event-loop turn. Each line carries the ID of the request it happened in (service.observe).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import IO

import orjson
import structlog

from service import observe
from service.settings import Settings

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


class AccessLog:
    """The access line writer of service.observe's middleware with the JSON format. A line goes through structlog's
    own processors (timestamp, JSON renderer on orjson) called directly, not through a bound logger: its level filter
    and processor loop cost twice the rendering (BENCHMARKS.md, "access log and request IDs"), and an access line is
    always written.

    The lines of one event-loop turn go out in one write at its end (`loop.call_soon`), the way nginx's access log
    takes `buffer=`: under load one turn answers a whole batch, and a system call per line was most of the line's cost
    in a serving process (BENCHMARKS.md). A line waits for the end of the turn it was written in, no longer; `flush()`
    writes what is left when the app stops."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.render = structlog.processors.JSONRenderer(orjson.dumps)
        self.lines: list[bytes] = []

    def __call__(self, record: observe.RequestRecord, method: str, path: str, seconds: float) -> None:
        status = record.status
        # error for a 500 (a bug, its traceback logged beside it); a 503 or a 4xx is the service working as meant
        level = "error" if status == 500 else "info"
        # One literal, times rounded to the microsecond by integer division: dict.update and round() were most of
        # what building the line cost (BENCHMARKS.md, "access log and request IDs").
        fields = {"event": "access", "level": level, "request_id": record.request_id, "method": method,
                  "path": path, "status": status, "duration_ms": _ms(seconds)}
        if record.trace_id is not None:
            fields["trace_id"] = record.trace_id
        if record.model is not None:
            fields["model"], fields["version"], fields["operation"] = record.model, record.version, record.operation
        if record.batch_size:
            fields["batch_size"], fields["queue_wait_ms"] = record.batch_size, _ms(record.queue_wait_s)
        self.lines.append(self.render(None, level, _TIME(None, level, fields)) + b"\n")
        if len(self.lines) == 1:  # the turn's first line: its end writes them all
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (a direct call): write it now
                self.flush()

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []  # taken first: a failed write must not keep its lines for the next
            self.out.write(b"".join(lines))
            self.out.flush()


def _ms(seconds: float) -> float:
    return int(seconds * 1e6 + 0.5) / 1e3


def access_log(settings: Settings, stream: IO[bytes] | None = None) -> AccessLog | None:
    """The access line writer with the JSON format (on `stream`, stderr's bytes by default); None (no access lines)
    with text, as before."""
    if settings.log_format != "json":
        return None
    return AccessLog(stream or sys.stderr.buffer)
