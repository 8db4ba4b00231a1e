"""The Open Inference Protocol (KServe v2) REST routes, beside the service's own: the same registry, batchers, body
reading and input checks (plumbing.py, codecs.py), with the protocol's names, tensors and error body.

Protocol model `<model>-<operation>` (service/oip_models.py); tensors as JSON or binary (service/oip_tensors.py);
errors become `{"error": ...}` on /v2 paths (service/oip_errors.py).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

import lvm
from service import codecs, oip_models, oip_tensors
from service.errors import Unavailable, UnknownModel, UnsupportedMediaType
from service.models import ServedModel
from service.operations import Operation
from service.plumbing import check_ready, receive, registry_of, result, state_of
from service.oip_schemas import (
    AUTH_ERRORS,
    INFER_BODY,
    INFER_ERRORS,
    INFER_REPLY,
    MODEL_ERRORS,
    NOT_READY,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    path_parameters,
)
from service.routing import RequestRoute

router = APIRouter(route_class=RequestRoute, tags=["Open Inference Protocol (KServe v2)"])
EXTENSIONS = ["binary_tensor_data"]
_MODEL = "/v2/models/{model_name}"
_VERSION = "/v2/models/{model_name}/versions/{model_version}"


def _json(payload: dict) -> Response:
    return Response(orjson.dumps(payload), media_type=codecs.JSON)


def _find(request: Request, model: str) -> ServedModel:
    """The loaded version of `model` the path names; 404 for an unknown model or version."""
    registry = registry_of(request)
    text = request.path_params.get("model_version")
    version = None if text is None else lvm.parse_version(text)
    if text is not None and version is None:  # a path names a resource: no such version, 404 (a query value is 422)
        raise UnknownModel(f"version must be a positive integer in ASCII digits, got {text[:32]!r}")
    return registry.get(model, version)


def _named(request: Request) -> tuple[ServedModel, Operation]:
    """The loaded version and the operation a protocol path names (the name is parsed once per request)."""
    model, op = oip_models.split_name(request.path_params["model_name"])
    return _find(request, model), op


@router.get("/v2", response_model=ServerMetadata, responses=AUTH_ERRORS, summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    return _json({"name": request.app.title, "version": request.app.version, "extensions": EXTENSIONS})


@router.get("/v2/health/live", response_model=Live, summary="The process is alive")
async def server_live(request: Request) -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", response_model=Ready, responses=NOT_READY,
            summary="200 once models are loaded and warm; 503 before and while draining")
async def server_ready(request: Request) -> Response:
    check_ready(request)  # raises the same 503 as /readyz
    return _json({"ready": True})


# Probes answer HEAD too, as /healthz and /readyz do (kept out of the schema for the same reason).
for _probe, _path in ((server_live, "/v2/health/live"), (server_ready, "/v2/health/ready")):
    router.add_api_route(_path, _probe, methods=["HEAD"], include_in_schema=False)


@router.get(_MODEL, response_model=ModelMetadata, responses=MODEL_ERRORS, summary="Protocol model metadata",
            openapi_extra={"parameters": path_parameters(False)})
@router.get(_VERSION, response_model=ModelMetadata, responses=MODEL_ERRORS, summary="Protocol model metadata",
            openapi_extra={"parameters": path_parameters(True)})
async def model_metadata(request: Request) -> Response:
    served, op = _named(request)
    versions = sorted(registry_of(request).models[served.name])
    return _json(oip_models.metadata(request.path_params["model_name"], served, versions, op))


@router.get(_MODEL + "/ready", response_model=ModelReady, responses={**MODEL_ERRORS, **NOT_READY},
            summary="200 when the protocol model is loaded and the service is not draining",
            openapi_extra={"parameters": path_parameters(False)})
@router.get(_VERSION + "/ready", response_model=ModelReady, responses={**MODEL_ERRORS, **NOT_READY},
            summary="200 when the protocol model is loaded and the service is not draining",
            openapi_extra={"parameters": path_parameters(True)})
async def model_ready(request: Request) -> Response:
    _named(request)
    if state_of(request).draining:
        raise Unavailable("not ready: draining", 1)
    return _json({"name": request.path_params["model_name"], "ready": True})


@router.post(_MODEL + "/infer", responses={**INFER_ERRORS, **INFER_REPLY}, summary="Inference",
             openapi_extra={**INFER_BODY, "parameters": path_parameters(False)})
@router.post(_VERSION + "/infer", responses={**INFER_ERRORS, **INFER_REPLY}, summary="Inference",
             openapi_extra={**INFER_BODY, "parameters": path_parameters(True)})
async def infer(request: Request) -> Response:
    state = state_of(request)
    _check_content_type(request.headers.get("content-type"))
    model, op = oip_models.split_name(request.path_params["model_name"])
    served, body = await receive(request, lambda: _find(request, model), op.name)
    with state.activity.arrival():  # only once the body is in (plumbing.receive says why)
        infer_request = oip_tensors.parse_request(body, request.headers.get(oip_tensors.HEADER_LENGTH))
        rows = oip_models.rows(op, served, infer_request, state.settings)
        batcher = served.batchers[op.name]
        pendings = batcher.put(rows)
    arrays = await result(request, batcher, pendings)
    outputs = oip_models.outputs(op, served, infer_request, arrays)
    reply, header_length = oip_tensors.render(request.path_params["model_name"], str(served.version),
                                              infer_request.id, outputs)
    if header_length is None:
        return Response(reply, media_type=codecs.JSON)
    return Response(reply, media_type=oip_tensors.OCTET_STREAM,
                    headers={oip_tensors.HEADER_LENGTH: str(header_length)})


def _check_content_type(content_type: str | None) -> None:
    """JSON, or JSON followed by binary tensors (tritonclient sends those with no Content-Type at all)."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("", codecs.JSON, oip_tensors.OCTET_STREAM):
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send {codecs.JSON} or "
                                   f"{oip_tensors.OCTET_STREAM}")
