"""Bounds on request bodies: their size (`BodyLimitMiddleware`: a declared Content-Length over the limit is refused
with 413 before a byte is read, a chunked body is counted and cut off at the limit), the time one may take to arrive
and the bytes of all bodies being read at once (`BodyReader`, used by the handlers). Parsing is left to codecs."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (
    BodyTimeout,
    ClientClosedRequest,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    send_error,
)

log = logging.getLogger("service.limits")
_RESERVED = "latentserve.body_bytes"  # the scope key holding the bytes a request reserved, released when it ends
_TRIM_AFTER_BYTES = 32 * 1024 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, budget: BodyBudget | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.budget = budget

    def _too_large(self, size: int | str) -> PayloadTooLarge:
        """`size`: the declared length, or "more than N" for a body without one (then no `got`)."""
        return PayloadTooLarge(f"body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes",
                               "max_body_bytes", self.max_body_bytes, size if isinstance(size, int) else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._call(scope, receive, send)
        finally:
            if self.budget is not None and scope.get(_RESERVED):
                self.budget.release(scope[_RESERVED])

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, InvalidInput("Content-Length is not an integer"))
                    return
                if declared > self.max_body_bytes:
                    await send_error(send, self._too_large(declared))
                    return
                await self.app(scope, receive, send)  # the server holds the body to its declared length
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large(f"more than {self.max_body_bytes}")
            return message

        await self.app(scope, counted, send)


class BodyBudget:
    """The bytes of request bodies being read, parsed and queued at once, bounded so that a burst of bulk uploads
    cannot take the process's memory; one body is always let in, however large. Once the bodies in flight are all
    answered after a burst, freed heap pages go back to the system (glibc keeps them otherwise)."""

    def __init__(self, max_bytes: int, rejected: Callable[[str], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.in_flight = 0
        self._rejected = rejected
        self._since_trim = 0
        self._trimming = False

    def reserve(self, scope: Scope, n: int) -> None:
        """Counts n more bytes for this request, or refuses it with 503 when they would overflow the budget."""
        if self.in_flight and self.in_flight + n > self.max_bytes:
            if self._rejected is not None:
                self._rejected("body_budget")
            raise Overloaded(f"too many request bodies being read at once ({self.in_flight} bytes, bound "
                             f"{self.max_bytes}); retry", 1)
        self.in_flight += n
        scope[_RESERVED] = scope.get(_RESERVED, 0) + n

    def release(self, n: int) -> None:
        self.in_flight -= n
        self._since_trim += n
        if not self.in_flight and self._since_trim >= _TRIM_AFTER_BYTES and not self._trimming and _malloc_trim:
            self._since_trim = 0
            self._trimming = True
            asyncio.get_running_loop().run_in_executor(None, _malloc_trim, 0).add_done_callback(self._trimmed)

    def _trimmed(self, _: object) -> None:
        self._trimming = False


class BodyReader:
    """Reads one request's body within the budget and the body timeout: the whole body must arrive within
    `timeout_s` of the first read (a total, not per chunk: a client sending a byte every few seconds would otherwise
    hold its connection and its memory forever). 408 past it, with the connection closed; 499 when the client hangs
    up before the end."""

    def __init__(self, budget: BodyBudget, timeout_s: float) -> None:
        self.budget = budget
        self.timeout_s = timeout_s

    async def read(self, scope: Scope, receive: Receive) -> bytes:
        declared = _content_length(scope)
        chunks: list[bytes] = []
        refused: Overloaded | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    if declared:
                        self.budget.reserve(scope, declared)
                    await self._receive_into(chunks, scope, receive, declared is None)
                except Overloaded as exc:
                    # Refused: the rest is read and dropped (no memory) before the 503 goes out, since a client
                    # still sending its body would not read an early answer, and the server would reset it.
                    refused = exc
                    chunks.clear()
                    await self._receive_into(None, scope, receive, False)
                    raise
        except TimeoutError:
            if refused is not None:  # still 503, but the rest of the body is left unread: close the connection
                refused.headers["Connection"] = "close"
                raise refused from None
            received = sum(map(len, chunks))
            raise BodyTimeout(f"the body did not arrive within {self.timeout_s:g} s ({received} bytes received"
                              + (f" of {declared})" if declared is not None else ")")) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _receive_into(self, chunks: list[bytes] | None, scope: Scope, receive: Receive, reserve: bool) -> None:
        """Receives the body's messages to its end into chunks (None: dropped), reserving as they come if asked."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientClosedRequest("the client closed the connection before its body had arrived")
            chunk = message.get("body", b"")
            if chunk and chunks is not None:
                if reserve:
                    self.budget.reserve(scope, len(chunk))
                chunks.append(chunk)
            if not message.get("more_body", False):
                return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)  # BodyLimitMiddleware has refused one that is not an integer
    return None


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, which hands freed heap pages back to the system; None elsewhere (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: the C library it runs on
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()
