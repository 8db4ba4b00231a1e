"""Access control as pure ASGI middleware: which key a request carries (`Authorization: Bearer <key>`, the scheme in
any case, RFC 9110 §11.1; its SHA-256 compared in constant time with every configured digest), whether the key has
the route's scope (`admin` for /admin/*, `infer` for the rest), and its per-key token bucket; with no key configured,
/admin/* answers only loopback clients unless LATENTSERVE_ADMIN_OPEN. Also `GET /auth/whoami` and the bearer scheme in
the OpenAPI document. The keys themselves (file, reload, checks) live in service.keys.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Forbidden, RateLimited, Unauthorized, send_error
from service.keys import ADMIN, ANONYMOUS, INFER, KEY_SCOPE, SCOPES, Key, KeyRing, digest_of
from service.pages import PAGE_PATHS, STATIC_PREFIX
from service.routing import RequestRoute
from service.schemas import AUTH_ERRORS, WhoAmI
from service.settings import Settings

log = logging.getLogger("service.auth")

# The probes (the service's and the protocol's) stay open to the platform. The page and its static files hold no
# data; the page asks for the key and sends it with every API call.
PUBLIC_PATHS = frozenset(("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")) | PAGE_PATHS
PUBLIC_PREFIX = STATIC_PREFIX + "/"
ADMIN_PREFIX = "/admin/"
WHOAMI_PATH = "/auth/whoami"
METRICS_PATH = "/metrics"
_SCHEME = b"bearer"
_NO_DIGEST = bytes(32)
_DIGEST_CACHE = 1024


class TokenBuckets:
    """One token bucket per key id (in this replica): `rate` tokens a second up to `burst`; a request takes one."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, when)

    def take(self, key: Key) -> int:
        """0 when the request may go; else the whole seconds (>= 1) until the bucket holds a token again."""
        now = self._clock()
        tokens, then = self._buckets.get(key.id, (key.burst, now))
        tokens = min(key.burst, tokens + (now - then) * key.rate)
        if tokens >= 1.0:
            self._buckets[key.id] = (tokens - 1.0, now)
            return 0
        self._buckets[key.id] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / key.rate))


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyRing, admin_open: bool, metrics_scope: str = "") -> None:
        self.app = app
        self.keys = keys
        self.admin_open = admin_open
        self._keyed = keys.configured
        self.metrics_scope = metrics_scope if keys.configured else ""
        self.buckets = TokenBuckets()
        self._digests: dict[bytes, bytes] = {}  # key as sent -> its SHA-256, for keys that matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (_public(path) and not (self.metrics_scope and path == METRICS_PATH)):
            await self.app(scope, receive, send)
            return
        error = self._check(scope) if self._keyed else self._check_open(scope)
        if error is not None:
            await send_error(send, error)
            return
        await self.app(scope, receive, send)

    def _check_open(self, scope: Scope) -> Forbidden | None:
        """No key configured: everything is open but admin, which only the host itself may call (unless opened)."""
        path = scope["path"]
        if path.startswith(ADMIN_PREFIX) or path == WHOAMI_PATH:
            admin = self.admin_open or _loopback(scope)
            scope[KEY_SCOPE] = (None, SCOPES if admin else (INFER,))
            if not admin and path != WHOAMI_PATH:
                return Forbidden("admin routes answer only loopback clients while no API key is configured; set "
                                 "LATENTSERVE_API_KEYS_FILE (or LATENTSERVE_ADMIN_OPEN=true on a trusted network)")
        return None

    def _check(self, scope: Scope) -> Unauthorized | Forbidden | RateLimited | None:
        key = self._key(scope)
        if key is None:
            scope[KEY_SCOPE] = (ANONYMOUS, ())
            return Unauthorized()
        scope[KEY_SCOPE] = (key.id, key.scope_names)
        path = scope["path"]
        if path != WHOAMI_PATH:
            if path.startswith(ADMIN_PREFIX):
                needed = ADMIN
            else:  # /metrics only gets here when LATENTSERVE_METRICS_SCOPE names a scope
                needed = self.metrics_scope if path == METRICS_PATH else INFER
            if needed not in key.scopes:
                return Forbidden(f"key {key.id!r} lacks the {needed!r} scope this route needs")
        if key.rate is not None:
            wait_s = self.buckets.take(key)
            if wait_s:
                return RateLimited(f"key {key.id!r} is over its rate of {key.rate:g} requests/s (burst "
                                   f"{key.burst:g}); retry in {wait_s} s", wait_s)
        return None

    def _key(self, scope: Scope) -> Key | None:
        """The configured key the request carries, or None. Every digest is compared (no early exit), each in
        constant time, so the time taken says nothing about which key, or which part of it, was close."""
        token, scheme_ok = None, False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                scheme_ok = scheme.lower() == _SCHEME
                break
        if token is None:
            digest = _NO_DIGEST
        else:
            token = token.lstrip(b" ")
            digest = self._digests.get(token) or digest_of(token)
        found = None
        for key in self.keys.current():
            if hmac.compare_digest(key.digest, digest) and found is None:
                found = key
        if found is not None and token not in self._digests:
            # Hashing is most of this check's cost; a client sends the same key again and again, so the digests of
            # keys that matched are kept (only those: wrong guesses never fill it), a bounded handful.
            if len(self._digests) >= _DIGEST_CACHE:
                self._digests.clear()
            self._digests[token] = digest
        return found if scheme_ok else None


def install(app: FastAPI, settings: Settings) -> None:
    """Adds the middleware (and the bearer scheme in OpenAPI when keys are configured); says once at start-up how
    admin is guarded. A keys file that cannot be read or parsed raises here: the service does not start with it."""
    keys = KeyRing(settings.api_key, settings.api_keys_file)
    if keys.configured:
        declare_bearer(app)
    elif settings.admin_open:
        log.warning("no API key configured and LATENTSERVE_ADMIN_OPEN=true: /admin/* is open to every client")
        return  # nothing to check: the single-image path pays for no middleware
    else:
        log.info("no API key configured: /admin/* answers only loopback clients (LATENTSERVE_ADMIN_OPEN=true opens "
                 "it)")
    app.add_middleware(AuthMiddleware, keys=keys, admin_open=settings.admin_open, metrics_scope=settings.metrics_scope)


router = APIRouter(route_class=RequestRoute)


@router.get(WHOAMI_PATH, response_model=WhoAmI, responses=AUTH_ERRORS,
            summary="The caller's key id and scopes (any valid key may ask)")
async def whoami(request: Request) -> Response:
    key, scopes = request.scope.get(KEY_SCOPE, (None, SCOPES))
    return Response(WhoAmI(key=key, scopes=list(scopes)).model_dump_json(), media_type="application/json")


def declare_bearer(app: FastAPI) -> None:
    """Adds the bearer scheme to the app's OpenAPI document, required by every operation outside PUBLIC_PATHS."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "an API key (LATENTSERVE_API_KEY or one of LATENTSERVE_API_KEYS_FILE)"}
            for path, operations in schema["paths"].items():
                if not _public(path):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def _loopback(scope: Scope) -> bool:
    """The TCP peer is this host. Only the socket's address counts: X-Forwarded-For and the like are never read."""
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
