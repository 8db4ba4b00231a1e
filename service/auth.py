"""API-key authentication as pure ASGI middleware: with a key set, every path but the probes, /metrics and the
explorer page's own files needs `Authorization: Bearer <key>`, compared in constant time."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized, send_error
from service.pages import PAGE_PATHS, STATIC_PREFIX

# The page and its static files hold no data; the page asks for the key and sends it with every API call.
PUBLIC_PATHS = frozenset(("/healthz", "/readyz", "/metrics")) | PAGE_PATHS
PUBLIC_PREFIX = STATIC_PREFIX + "/"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = b"Bearer " + api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _public(scope["path"]) and not self._authorized(scope):
            await send_error(send, Unauthorized())
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)
