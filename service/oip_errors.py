"""The Open Inference Protocol's error body on /v2 paths: `{"error": ..., "request_id": ...}` in place of the
service's `{"detail", "type", "request_id"}`, with the same status and headers, whoever raised it (a handler, routing, auth, the body limit).

Pure ASGI middleware, outermost, so that the errors the other middlewares send pass through it too; other paths and
successful replies go through untouched. (A 500 is rendered outside every middleware and keeps the service's body.)
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def is_protocol_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def protocol_body(body: bytes) -> bytes:
    """`{"error": detail, "request_id": ...}` from the service's error body; any other body is left as it is."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(obj, dict) or not isinstance(obj.get("detail"), str):
        return body
    return orjson.dumps({"error": obj["detail"], "request_id": obj.get("request_id")})


class ProtocolErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protocol_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held back until the body is in: its length changes
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = protocol_body(b"".join(chunks))
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)
