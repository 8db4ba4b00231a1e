"""One exception class per error `type` the service returns, each carrying the server's `detail`, and the two the
client raises itself when it cannot get an answer at all (connection failures, timeouts). Nothing here does I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC


class LatentServeError(Exception):
    """Base of every error this package raises. `status` is the HTTP status (None when no reply came back), `type`
    the service's machine-readable kind, `detail` its message for people."""

    status: int | None = None
    type: str = "error"

    def __init__(self, detail: str, *, status: int | None = None, type: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.type}: {self.detail}"


class ServiceError(LatentServeError):
    """An error reply of the service; subclasses below name each `type`. An unknown type comes back as this class
    itself, with the reply's status and type."""


class InvalidInput(ServiceError):
    status, type = 422, "invalid_input"


class UnknownModel(ServiceError):
    status, type = 404, "unknown_model"


class NotFound(ServiceError):
    status, type = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, type = 405, "method_not_allowed"


class RequestTimeout(ServiceError):
    """408: the server gave up waiting for the request's body."""

    status, type = 408, "request_timeout"


class PayloadTooLarge(ServiceError):
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, type = 415, "unsupported_media_type"


class Unauthorized(ServiceError):
    status, type = 401, "unauthorized"


class ClientClosedRequest(ServiceError):
    status, type = 499, "client_closed_request"


class Internal(ServiceError):
    status, type = 500, "internal"


class HTTPError(ServiceError):
    """Any other HTTP error the framework answered with (type "http_error")."""

    type = "http_error"


class Unavailable(ServiceError):
    """503: no model loaded yet, draining, or busy. `retry_after` is the server's Retry-After in seconds (or None)."""

    status, type = 503, "unavailable"

    def __init__(self, detail: str, *, status: int | None = None, type: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail, status=status, type=type)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """503 with a full queue: retry after `retry_after` seconds."""

    type = "overloaded"


class Timeout(ServiceError):
    """504: the request waited in the server's queue longer than its request timeout."""

    status, type = 504, "timeout"


class TransportError(LatentServeError):
    """No reply: the connection failed, was dropped, or the client's own timeout passed."""

    type = "transport"


class ConnectionFailed(TransportError):
    type = "connection_failed"


class NotConnected(ConnectionFailed):
    """The connection could not be opened (refused, say, while the server restarts): nothing was sent, so it is
    retried, with backoff, up to the retry deadline whatever `max_attempts` says."""

    type = "not_connected"


class ClientTimeout(TransportError):
    """The client's per-attempt timeout or overall deadline passed before a whole reply came."""

    type = "client_timeout"


class BadReply(LatentServeError):
    """A 2xx reply that is not what it claims: not JSON, JSON without the expected keys, an unreadable .npy, a
    missing or non-numeric X-Model-Version, images of the wrong shape. Not retried."""

    type = "bad_reply"


class InvalidArgument(LatentServeError, ValueError):
    """An argument of the client itself that can never work (a non-ASCII API key, a timeout that is not a positive
    number, an unknown format); raised before anything is sent."""

    type = "invalid_argument"


# type -> class, for every error the service can send (the service's list lives in its service/errors.py).
BY_TYPE: dict[str, type[ServiceError]] = {
    cls.type: cls for cls in (InvalidInput, UnknownModel, NotFound, MethodNotAllowed, RequestTimeout, PayloadTooLarge,
                              UnsupportedMediaType, Unauthorized, ClientClosedRequest, Internal, HTTPError,
                              Unavailable, Overloaded, Timeout)
}
# A reply without the service's error body (a proxy in front, say) is still mapped by its status.
_BY_STATUS: dict[int, type[ServiceError]] = {401: Unauthorized, 404: NotFound, 405: MethodNotAllowed,
                                             408: RequestTimeout, 413: PayloadTooLarge, 415: UnsupportedMediaType,
                                             422: InvalidInput, 500: Internal, 503: Unavailable, 504: Timeout}


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable, and when
    negative, infinite or not a number (then the client backs off as it would without one)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def from_reply(status: int, headers: Mapping[str, str], content: bytes) -> ServiceError:
    """The exception for an error reply: by the body's `type` when it has the service's `{"detail", "type"}` shape,
    else by status, with the body's text as detail."""
    detail, type_ = None, None
    try:
        body = json.loads(content)
        if isinstance(body, dict):
            detail, type_ = body.get("detail"), body.get("type")
    except ValueError:
        pass
    if not isinstance(detail, str):
        detail = content[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = BY_TYPE.get(type_) if isinstance(type_, str) else None
    cls = cls or _BY_STATUS.get(status, ServiceError)
    kind = type_ if isinstance(type_, str) else None
    if issubclass(cls, Unavailable):
        return cls(detail, status=status, type=kind, retry_after=retry_after_s(headers.get("retry-after")))
    return cls(detail, status=status, type=kind)
