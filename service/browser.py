"""What browsers are told: CORS for the configured origins (Starlette's CORSMiddleware) and, on the explorer page and
its static files, a Content-Security-Policy of the service's own origin and the other security and cache headers.

Starlette's StaticFiles already sends an ETag and Last-Modified and answers 304 to a matching If-None-Match; the
`no-cache` here makes the browser revalidate (a 304 of a few hundred bytes) instead of keeping a stale script.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.pages import PAGE_PATHS, STATIC_PREFIX
from service.settings import Settings

# Own origin only; no inline script or style, no eval. Images: the report PNGs arrive as blob: URLs made by the page.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-cache")]
# What a page on another origin may send and read (CORS): the API's request headers, and the reply headers the
# client package and the page read.
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Accept", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["Retry-After", "X-Model", "X-Model-Version", "X-Embedding-Columns", "X-Request-ID"]
_STATIC = STATIC_PREFIX + "/"


class PageHeadersMiddleware:
    """Adds PAGE_HEADERS to the replies of the page and its static files; every other path passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] in PAGE_PATHS or scope["path"].startswith(_STATIC)):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in PAGE_HEADERS}
                message["headers"] = [h for h in message.get("headers", []) if h[0] not in names] + PAGE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Adds the page headers and, when LATENTSERVE_CORS_ORIGINS names any, CORS (outside authentication, so that a
    preflight, which carries no key, is answered)."""
    app.add_middleware(PageHeadersMiddleware)
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "HEAD"],
                           allow_headers=CORS_REQUEST_HEADERS, expose_headers=CORS_EXPOSED_HEADERS, max_age=600)
