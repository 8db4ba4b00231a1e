"""Thin handlers: read the body, pick the model, validate (codecs), queue (batchers), shape the reply.

Bodies are read with `request.body()` and parsed with orjson and numpy; the pydantic schemas only document them.
Each request's noise comes from its own generator seeded before queuing, so batching never changes a result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import orjson
import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import codecs
from service.batcher import Batcher, Pending
from service.errors import ClientClosedRequest, InvalidInput, Unavailable, UnsupportedMediaType
from service.metrics import CONTENT_TYPE
from service.models import ServedModel
from service.routing import RequestRoute
from service.schemas import (
    AUTH_ERRORS, INFERENCE_ERRORS, QUERY_PARAMETERS, DecodeRequest, DecodeResponse, EncodeRequest, EncodeResponse,
    ErrorBody, ModelDetail, ModelsResponse, ReconstructRequest, ReconstructResponse, ReloadResponse, SampleRequest,
    SampleResponse, Status, image_replies, request_body,
)
from service.state import ServiceState

router = APIRouter(route_class=RequestRoute)
_WATCH_ROWS = 32  # requests with at least this many rows are withdrawn when their client hangs up
_IMAGES_NPY = "(N, 28, 28) or (N, 784) array, uint8 0-255 or float32 0-1"


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def _extra(model, npy: str | None) -> dict:
    return {**request_body(model, npy), "parameters": QUERY_PARAMETERS}


async def _receive(
    request: Request, state: ServiceState, op: str, allow_npy: bool = True
) -> tuple[ServedModel, bytes, str]:
    """The model asked for, the raw body and its format ('json' or 'npy'). 415, 404 and a full queue's 503 come
    before the body is read, the body budget's 503 is decided before it (the body is then dropped as it arrives);
    408 when it does not arrive in time, 499 when the client hangs up first (service.limits). Callers count
    themselves as work on its way (`state.activity.arrival()`) only once this returns: a stalled upload must not
    make the collectors wait for it."""
    fmt = codecs.body_format(request.headers.get("content-type"))
    if fmt == "npy" and not allow_npy:
        raise UnsupportedMediaType("this endpoint takes a JSON body only")
    served, body = await receive(request, lambda: _served(request, state), op)
    return served, body, fmt


async def receive(request: Request, find: Callable[[], ServedModel], op: str) -> tuple[ServedModel, bytes]:
    """The model `find` names and the raw body; a full queue's 503 comes before the body is read. Shared with the
    Open Inference Protocol routes (service/oip.py), which find their model by path instead of query."""
    find().batchers[op].admit()
    body = await _state(request).bodies.read(request.scope, request.receive)
    # Looked up again: a reload may have swapped versions while the body arrived. From here to the queue nothing
    # awaits, so the version returned is still serving when the rows are queued.
    return find(), body


def _served(request: Request, state: ServiceState) -> ServedModel:
    if not request.scope["query_string"]:  # the common case: skip parsing an empty query string
        return state.registry.get(None, None)
    query = request.query_params
    return state.registry.resolve(query.get("model"), query.get("version"))


async def result(request: Request, batcher: Batcher, pendings: list[Pending]) -> tuple[np.ndarray, ...]:
    """The batcher's outputs; a large request whose client hangs up first is withdrawn from its queue, so that work
    nobody will read neither runs nor holds queue room (uvicorn does not cancel a handler on disconnect). Small
    requests skip the watch: it would cost more than the work it could save."""
    if len(pendings) == 1 and len(pendings[0].x) < _WATCH_ROWS:
        return await batcher.result(pendings)
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
    return answer.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read, so receive() only ever says disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def json_reply(payload: dict) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=codecs.JSON)


def _images_reply(request: Request, served: ServedModel, payload: dict) -> Response:
    """JSON, or the payload's images as one PNG grid or a float32 (N, 784) .npy, as the Accept header asks."""
    fmt = codecs.reply_format(request.headers.get("accept"))
    if fmt == "json":
        return json_reply(payload)
    headers = {"X-Model": served.name, "X-Model-Version": str(served.version)}
    if fmt == "png":
        return Response(codecs.png_grid(payload["images"]), media_type=codecs.PNG, headers=headers)
    return Response(codecs.npy_bytes(payload["images"]), media_type=codecs.NPY, headers=headers)


def noise(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """Standard normal (n, K) from the request's own generator: the same seed gives the same noise in any batch."""
    return torch.randn((n, latent_dim), generator=torch.Generator().manual_seed(seed)).numpy()


@router.post("/encode", response_model=EncodeResponse, responses=INFERENCE_ERRORS,
             openapi_extra=_extra(EncodeRequest, _IMAGES_NPY), summary="Posterior of z given images")
async def encode(request: Request) -> Response:
    state = _state(request)
    limit = state.settings.max_items_per_request
    served, body, fmt = await _receive(request, state, "encode")
    with state.activity.arrival():
        x = codecs.images_from_npy(body, limit) if fmt == "npy" else codecs.images_from_json(
            codecs.load_json(body).get("images"), limit)
        batcher = served.batchers["encode"]
        pendings = batcher.put(x)
    z_loc, *z_scale = await result(request, batcher, pendings)
    return json_reply({"model": served.name, "version": served.version, "mean": z_loc,
                       "scale": z_scale[0] if z_scale else None})


@router.post("/decode", response_model=DecodeResponse, responses={**INFERENCE_ERRORS, **image_replies(DecodeResponse)},
             openapi_extra=_extra(DecodeRequest, "float32 (N, K) array"), summary="Pixel means of latent codes")
async def decode(request: Request) -> Response:
    state = _state(request)
    limit = state.settings.max_items_per_request
    served, body, fmt = await _receive(request, state, "decode")
    with state.activity.arrival():
        k = served.latent_dim
        z = codecs.latents_from_npy(body, k, limit) if fmt == "npy" else codecs.latents_from_json(
            codecs.load_json(body).get("latents"), k, limit)
        batcher = served.batchers["decode"]
        pendings = batcher.put(z)
    (x_loc,) = await result(request, batcher, pendings)
    return _images_reply(request, served, {"model": served.name, "version": served.version, "images": x_loc})


@router.post("/reconstruct", response_model=ReconstructResponse,
             responses={**INFERENCE_ERRORS, **image_replies(ReconstructResponse)},
             openapi_extra=_extra(ReconstructRequest, _IMAGES_NPY + "; sample and seed as query parameters"),
             summary="Images through the posterior and back")
async def reconstruct(request: Request) -> Response:
    state = _state(request)
    limit = state.settings.max_items_per_request
    served, body, fmt = await _receive(request, state, "reconstruct")
    with state.activity.arrival():
        if fmt == "npy":
            x = codecs.images_from_npy(body, limit)
            query = request.query_params
            sample, seed = codecs.flag(query.get("sample"), "sample"), codecs.query_seed(query.get("seed"))
        else:
            obj = codecs.load_json(body)
            x = codecs.images_from_json(obj.get("images"), limit)
            sample, seed = obj.get("sample", False), codecs.seed(obj.get("seed"))
            if not isinstance(sample, bool):
                raise InvalidInput("sample must be true or false")
        k = served.latent_dim
        eps = noise(len(x), k, seed) if sample else np.zeros((len(x), k), np.float32)
        batcher = served.batchers["reconstruct"]
        pendings = batcher.put(np.concatenate([x, eps], axis=1))
    x_loc, z_loc, *z_scale = await result(request, batcher, pendings)
    return _images_reply(request, served, {"model": served.name, "version": served.version, "images": x_loc,
                                           "mean": z_loc, "scale": z_scale[0] if z_scale else None})


@router.post("/sample", response_model=SampleResponse, responses={**INFERENCE_ERRORS, **image_replies(SampleResponse)},
             openapi_extra=_extra(SampleRequest, None), summary="Draws from the prior, decoded")
async def sample(request: Request) -> Response:
    state = _state(request)
    served, body, _ = await _receive(request, state, "sample", allow_npy=False)
    with state.activity.arrival():
        obj = codecs.load_json(body) if body.strip() else {}
        n = obj.get("n", 16)
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidInput("n must be an integer")
        codecs.check_count(n, state.settings.max_items_per_request, "samples")
        batcher = served.batchers["sample"]
        pendings = batcher.put(noise(n, served.latent_dim, codecs.seed(obj.get("seed"))))
    z, x_loc = await result(request, batcher, pendings)
    return _images_reply(request, served, {"model": served.name, "version": served.version, "latents": z,
                                           "images": x_loc})


@router.get("/models", response_model=ModelsResponse, responses=AUTH_ERRORS, summary="Loaded models and versions")
async def models(request: Request) -> Response:
    settings = _state(request).settings
    return json_reply({**registry_of(request).overview(), "limits": {
        "max_items_per_request": settings.max_items_per_request, "max_body_bytes": settings.max_body_bytes}})


@router.get("/models/{name}", response_model=ModelDetail, summary="The manifests of one model's versions",
            responses={**AUTH_ERRORS, 404: {"model": ErrorBody, "description": "no such model"}})
async def model_detail(request: Request, name: str) -> Response:
    return json_reply(registry_of(request).describe(name))


def registry_of(request: Request):
    registry = _state(request).registry
    if registry is None:
        raise Unavailable("the service is starting", 1)
    return registry


@router.post("/admin/reload", response_model=ReloadResponse, responses=AUTH_ERRORS,
             summary="Rescan the artifacts: load, verify and warm new versions, drop removed ones")
async def reload(request: Request) -> Response:
    state = _state(request)
    report = await registry_of(request).reload()
    state.loaded = True
    state.update_ready()
    return json_reply(report)


@router.get("/healthz", response_model=Status, summary="The process is alive (HEAD too)")
async def healthz(request: Request) -> Response:
    return json_reply({"status": "ok"})


@router.get("/readyz", response_model=Status,
            summary="200 once models are loaded and warm; 503 before and while draining (HEAD too)",
            responses={503: {"model": ErrorBody, "description": "loading, nothing loaded, or draining"}})
async def readyz(request: Request) -> Response:
    state = _state(request)
    if state.ready:
        return json_reply({"status": "ready"})
    reason = "draining" if state.draining else "loading" if not state.loaded else "no model loaded"
    raise Unavailable(f"not ready: {reason}", 1)


# Load balancers probe with HEAD as well; the server sends the headers only. Kept out of the schema, where a
# second method on the same operation would duplicate its operationId.
for _probe in (healthz, readyz):
    router.add_api_route(f"/{_probe.__name__}", _probe, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)

