"""The service's own routes: one handler per operation of service/operations.py's table (read the body, pick the
model, parse and check it with codecs, queue the rows, shape the reply), and the model listing, reload and probes.

Bodies are read with `request.body()` and parsed with orjson and numpy; the pydantic schemas only document them.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import codecs
from service.errors import InvalidInput, UnsupportedMediaType
from service.metrics import CONTENT_TYPE
from service.models import ServedModel
from service.operations import NO_DIGIT, OPERATIONS, Call, Operation
from service.plumbing import check_admin_request, check_ready, json_reply, receive, registry_of, result, state_of
from service.routing import RequestRoute
from service.schemas import (
    ADMIN_ERRORS, AUTH_ERRORS, INFERENCE_ERRORS, QUERY_PARAMETERS, ErrorBody, ModelDetail, ModelsResponse, ReloadResponse, Status,
    image_replies, request_body,
)

router = APIRouter(route_class=RequestRoute)


def _served(request: Request) -> ServedModel:
    if not request.scope["query_string"]:  # the common case: skip parsing an empty query string
        return registry_of(request).get(None, None)
    query = request.query_params
    return registry_of(request).resolve(query.get("model"), query.get("version"))


def _parse(request: Request, op: Operation, served: ServedModel, body: bytes, fmt: str, max_items: int) -> Call:
    """The request's arrays and parameters: from the JSON body, or the .npy body (the operation's one array input)
    with the parameters in the query string."""
    if fmt == "npy":
        (given,) = op.inputs
        query = request.query_params
        return Call({given.name: given.from_npy(body, served, max_items)},
                    {p.name: p.from_query(query.get(p.name)) for p in op.params})
    obj = codecs.load_json(body) if body.strip() or op.inputs else {}
    arrays = {i.name: i.from_json(obj.get(i.name), served, max_items) for i in op.inputs}
    params = {}
    for p in op.params:
        given = [name for name in (p.name, *p.aliases) if obj.get(name) is not None]
        if len(given) > 1:  # an alias beside its name would otherwise go unread, and unchecked
            raise InvalidInput(f"{' and '.join(given)} name the same parameter; give one")
        params[p.name] = p.parse(obj.get(given[0]) if given else None)
    return Call(arrays, params)


def _reply(request: Request, op: Operation, served: ServedModel, call: Call,
           arrays: tuple[np.ndarray, ...]) -> Response:
    """JSON ({model, version} and every output, null where this model has none), or for operations that give
    images, the images alone as one PNG grid or a float32 (N, 784) .npy, as the Accept header asks."""
    named = dict(zip((out.name for out in op.given(served)), arrays, strict=True))
    fmt = codecs.reply_format(request.headers.get("accept")) if op.images_reply else "json"
    if fmt == "json":
        return json_reply({"model": served.name, "version": served.version, **{p: call.params[p] for p in op.echo},
                           **{out.name: named.get(out.name) for out in op.outputs}})
    headers = {"X-Model": served.name, "X-Model-Version": str(served.version)}
    if fmt == "png":
        return Response(codecs.png_grid(named["images"]), media_type=codecs.PNG, headers=headers)
    return Response(codecs.npy_bytes(named["images"]), media_type=codecs.NPY, headers=headers)


async def serve(request: Request, op: Operation) -> Response:
    """Every operation's handler: 415 and 404 before the body is read (service.plumbing.receive says what else),
    then parse, check and queue with nothing awaited in between."""
    state = state_of(request)
    fmt = codecs.body_format(request.headers.get("content-type"))
    if fmt == "npy" and op.npy_body is None:
        raise UnsupportedMediaType("this endpoint takes a JSON body only")
    served, body = await receive(request, lambda: _served(request), op.name)
    with state.activity.arrival():
        call = _parse(request, op, served, body, fmt, state.settings.max_items_per_request)
        served = _digit_model(request, op, served, call)
        rows = op.pack(served, call, state.settings)
        batcher = served.batchers[op.name]
        pendings = batcher.put(rows)
    return _reply(request, op, served, call, await result(request, batcher, pendings))


def _digit_model(request: Request, op: Operation, served: ServedModel, call: Call) -> ServedModel:
    """A draw of a given digit that names no model goes to the default digit model when it is loaded. Only
    operations without array inputs are rerouted: their parse did not depend on the model (its latent_dim)."""
    if op.inputs or call.params.get("digit", NO_DIGIT) == NO_DIGIT or "model" in request.query_params:
        return served
    registry = registry_of(request)
    name = state_of(request).settings.default_digit_model
    return registry.get(name, None) if name in registry.models else served


def _route(op: Operation) -> None:
    async def handler(request: Request) -> Response:
        return await serve(request, op)

    handler.__name__ = op.name  # FastAPI's operationId
    responses = {**INFERENCE_ERRORS, **(image_replies(op.response_schema) if op.images_reply else {})}
    extra = {**request_body(op.request_schema, op.npy_body), "parameters": QUERY_PARAMETERS}
    router.add_api_route(f"/{op.name}", handler, methods=["POST"], response_model=op.response_schema,
                         responses=responses, openapi_extra=extra, summary=op.summary)


for _op in OPERATIONS.values():
    _route(_op)


@router.get("/models", response_model=ModelsResponse, responses=AUTH_ERRORS, summary="Loaded models and versions")
async def models(request: Request) -> Response:
    settings = state_of(request).settings
    return json_reply({**registry_of(request).overview(), "limits": {
        "max_items_per_request": settings.max_items_per_request, "max_body_bytes": settings.max_body_bytes,
        "max_score_work": settings.max_score_work}})


@router.get("/models/{name}", response_model=ModelDetail, summary="The manifests of one model's versions",
            responses={**AUTH_ERRORS, 404: {"model": ErrorBody, "description": "no such model"}},
            openapi_extra={"parameters": [{"name": "name", "in": "path", "required": True,
                                           "schema": {"type": "string"}}]})
async def model_detail(request: Request) -> Response:
    # The name is read from the path, not a parameter: FastAPI would document a 422 body this route never sends.
    return json_reply(registry_of(request).describe(request.path_params["name"]))


@router.post("/admin/reload", response_model=ReloadResponse, responses={**AUTH_ERRORS, **ADMIN_ERRORS},
             summary="Rescan the artifacts: load, verify and warm new versions, drop removed ones, follow pins",
             description="Send `Content-Type: application/json` (no body needed) or an `X-Requested-With` header.")
async def reload(request: Request) -> Response:
    check_admin_request(request)
    registry_of(request)  # 503 while the service is starting
    return json_reply(await state_of(request).reload())


@router.get("/healthz", response_model=Status, summary="The process is alive (HEAD too)")
async def healthz(request: Request) -> Response:
    return json_reply({"status": "ok"})


@router.get("/readyz", response_model=Status,
            summary="200 once models are loaded and warm; 503 before and while draining (HEAD too)",
            responses={503: {"model": ErrorBody, "description": "loading, nothing loaded, or draining"}})
async def readyz(request: Request) -> Response:
    check_ready(request)
    return json_reply({"status": "ready"})


# Load balancers probe with HEAD as well; the server sends the headers only. Kept out of the schema, where a
# second method on the same operation would duplicate its operationId.
for _probe in (healthz, readyz):
    router.add_api_route(f"/{_probe.__name__}", _probe, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE)

