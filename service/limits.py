"""The request body bound as pure ASGI middleware: a declared Content-Length over the limit is refused with 413
before a byte of the body is read; a chunked body is counted as it arrives and cut off at the limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InvalidInput, PayloadTooLarge, send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: int | str) -> PayloadTooLarge:
        return PayloadTooLarge(f"body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
