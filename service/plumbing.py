"""What every route family shares (the service's own routes, the Open Inference Protocol's, the page's): the state,
the registry (503 while starting), readiness, reading a body for an operation's queue, waiting for the batcher's
outputs while watching for a client that hangs up, and JSON replies. No route family imports another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response

from service import codecs
from service.batcher import Batcher, Pending
from service.errors import ClientClosedRequest, InvalidInput, Unavailable, UnsupportedMediaType
from service.models import ServedModel
from service.registry import Registry
from service.state import ServiceState

_WATCH_ROWS = 32  # requests with at least this many rows are withdrawn when their client hangs up
ADMIN_HEADER = "X-Requested-With"  # with any value: what an admin POST may send instead of a JSON content type


def state_of(request: Request) -> ServiceState:
    return request.app.state.service


def registry_of(request: Request) -> Registry:
    registry = state_of(request).registry
    if registry is None:
        raise Unavailable("the service is starting", 1)
    return registry


def check_admin_request(request: Request) -> None:
    """An admin POST must say `Content-Type: application/json` or carry X-Requested-With: a browser sends neither
    cross-site without a CORS preflight (which this service never grants), so a form on another site cannot make a
    browser reload the models. 415 otherwise."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != codecs.JSON and ADMIN_HEADER not in request.headers:
        raise UnsupportedMediaType(f"admin requests must be sent with Content-Type: {codecs.JSON} or an "
                                   f"{ADMIN_HEADER} header (a cross-site form can send neither); got "
                                   f"{media[:64] or 'no content type'}")


def check_ready(request: Request) -> None:
    """Returns when the service is ready (models loaded and warm, not draining); raises the 503 saying why not."""
    state = state_of(request)
    if state.ready:
        return
    reason = "draining" if state.draining else "loading" if not state.loaded else "no model loaded"
    raise Unavailable(f"not ready: {reason}", 1)


async def receive(request: Request, find: Callable[[], ServedModel], op: str) -> tuple[ServedModel, bytes]:
    """The model `find` names and the raw body. A full queue's 503 comes before the body is read, the body budget's
    503 is decided before it (the body is then dropped as it arrives); 408 when it does not arrive in time, 499 when
    the client hangs up first (service.limits). Callers count themselves as work on its way
    (`state.activity.arrival()`) only once this returns: a stalled upload must not make the collectors wait for it."""
    find().batchers[op].admit()
    body = await state_of(request).bodies.read(request.scope, request.receive)
    # Looked up again: a reload may have swapped versions while the body arrived. From here to the queue nothing
    # awaits, so the version returned is still serving when the rows are queued.
    return find(), body


async def result(request: Request, batcher: Batcher, pendings: list[Pending]) -> tuple[np.ndarray, ...]:
    """The batcher's outputs; a large request whose client hangs up first is withdrawn from its queue, so that work
    nobody will read neither runs nor holds queue room (uvicorn does not cancel a handler on disconnect). Small
    requests skip the watch: it would cost more than the work it could save."""
    if len(pendings) == 1 and len(pendings[0].x) < _WATCH_ROWS:
        return _finite(await batcher.result(pendings))
    answer = asyncio.ensure_future(batcher.result(pendings))
    hang_up = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answer, hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
    if not answer.done():
        answer.cancel()  # batcher.result cancels its chunks and frees their queue room
        await asyncio.wait((answer,))
        raise ClientClosedRequest("the client closed the connection before the answer was ready")
    return _finite(answer.result())


def _finite(outputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The outputs, unless some are not finite: inputs of a magnitude the model cannot take (latents near the
    float32 maximum overflow its first layer) are the caller's to fix, a 422, never a 200 with nulls."""
    for out in outputs:
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise InvalidInput("the model's output for these inputs is not finite: their magnitude is beyond what "
                               "it can compute (latents of a few hundred at most are meaningful)")
    return outputs


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read, so receive() only ever says disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def json_reply(payload: dict) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=codecs.JSON)
