"""API-key authentication as pure ASGI middleware: with a key set, every path but the probes, /metrics and the
explorer page's own files needs `Authorization: Bearer <key>` (the scheme in any case, RFC 9110 §11.1), the key
compared in constant time; and the matching bearer scheme in the OpenAPI document, so that /docs offers an Authorize
button."""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized, send_error
from service.pages import PAGE_PATHS, STATIC_PREFIX

# The probes (the service's and the protocol's) stay open to the platform. The page and its static files hold no
# data; the page asks for the key and sends it with every API call.
PUBLIC_PATHS = frozenset(("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")) | PAGE_PATHS
PUBLIC_PREFIX = STATIC_PREFIX + "/"
_SCHEME = b"bearer"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _public(scope["path"]) and not self._authorized(scope):
            await send_error(send, Unauthorized())
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # Both checks always run (`&`, not `and`): the time taken never depends on which part was wrong.
                return (scheme.lower() == _SCHEME) & hmac.compare_digest(token.lstrip(b" "), self._key)
        return False


def declare_bearer(app: FastAPI) -> None:
    """Adds the bearer scheme to the app's OpenAPI document, required by every operation outside PUBLIC_PATHS."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer", "description": "the service's API key (LATENTSERVE_API_KEY)"}
            for path, operations in schema["paths"].items():
                if not _public(path):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)
