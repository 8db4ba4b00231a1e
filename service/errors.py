"""The exception family of the service and the one handler that renders every error as `{"detail", "type"}` JSON.

FastAPI's own validation errors and Starlette's 404/405 go through the same renderer, and so do the ASGI middlewares.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

from service.oip_errors import is_protocol_path, protocol_body

log = logging.getLogger("service.errors")


class ServiceError(Exception):
    """Base of every error with a status; `detail` is safe to show to the client."""

    status: int = 500
    type: str = "internal"

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status, type = 422, "invalid_input"


class UnknownModel(ServiceError):
    status, type = 404, "unknown_model"


class NotFound(ServiceError):
    status, type = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, type = 405, "method_not_allowed"


class PayloadTooLarge(ServiceError):
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, type = 415, "unsupported_media_type"


class Unauthorized(ServiceError):
    status, type = 401, "unauthorized"

    def __init__(self, detail: str = "missing or invalid API key; send 'Authorization: Bearer <key>'") -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class Unavailable(ServiceError):
    """503: the queue is full, no model is loaded yet, or the service is draining; says when to retry."""

    status, type = 503, "unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, {"Retry-After": str(max(1, int(retry_after_s)))})


class Overloaded(Unavailable):
    type = "overloaded"


class RequestTimeout(ServiceError):
    status, type = 504, "timeout"


class BodyTimeout(ServiceError):
    """408: the body did not arrive within the body timeout; the connection is closed, as its rest is not read."""

    status, type = 408, "request_timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"Connection": "close"})


class Internal(ServiceError):
    status, type = 500, "internal"


class ClientClosedRequest(ServiceError):
    """499 (nginx's code): the client hung up before its body arrived or its answer was ready; nobody reads this
    reply, and it is logged as one line (no traceback): it is the client's doing, not the service's."""

    status, type = 499, "client_closed_request"


def error_body(exc: ServiceError) -> bytes:
    return orjson.dumps({"detail": exc.detail, "type": exc.type})


def error_response(exc: ServiceError) -> Response:
    return Response(error_body(exc), exc.status, exc.headers, media_type="application/json")


async def send_error(send: Send, exc: ServiceError) -> None:
    """Sends an error straight from an ASGI middleware, outside FastAPI's handlers."""
    body = error_body(exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def as_service_error(exc: Exception) -> ServiceError:
    """Maps any exception to the family; unknown ones become a bare 500 whose traceback the caller logs."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, ClientDisconnect):  # Starlette's own body readers say so
        return ClientClosedRequest("the client closed the connection before its body had arrived")
    if isinstance(exc, RequestValidationError):
        return InvalidInput(_validation_detail(exc))
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return NotFound("no such endpoint" if exc.detail == "Not Found" else str(exc.detail))
        if exc.status_code == 405:
            return MethodNotAllowed("method not allowed on this endpoint", dict(exc.headers or {}))
        error = ServiceError(str(exc.detail), dict(exc.headers or {}))
        error.status, error.type = exc.status_code, "http_error"
        return error
    return Internal("internal")


async def handle_error(request: Request, exc: Exception) -> Response:
    """The one handler: renders every error as JSON and logs the traceback of a 500 once."""
    error = as_service_error(exc)
    if isinstance(error, Internal) and error is not exc:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    elif isinstance(error, (ClientClosedRequest, BodyTimeout)):
        log.info("%s %s: %d %s", request.method, request.url.path, error.status, error.detail)
    response = error_response(error)
    if is_protocol_path(request.url.path):  # a 500 is rendered outside the protocol's middleware: its body here
        response.body = protocol_body(response.body)
        response.headers["content-length"] = str(len(response.body))
    return response


def install(app: FastAPI) -> None:
    for kind in (ServiceError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle_error)
