"""The Open Inference Protocol's request and response models, for OpenAPI only: the routes parse bodies with orjson
and numpy (service/oip_tensors.py) and never validate through these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.oip_tensors import DATATYPES, HEADER_LENGTH, OCTET_STREAM

Datatype = Field(description=f"one of {', '.join(DATATYPES)}")
# Flat or nested in row-major order; numbers, or true/false for BOOL.
Data = list[Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Datatype
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ModelMetadata(BaseModel):
    name: str = Field(description="<model>-<operation>, e.g. vae-encode")
    versions: list[str] = Field(description="the loaded versions")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Datatype
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: its bytes in the binary tail")
    data: Data | None = Field(None, description="absent when the tensor is in the binary tail")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true puts it in the binary tail")


class InferenceRequest(BaseModel):
    """With the binary tensor data extension the body is this JSON followed by the binary tensors, and the
    Inference-Header-Content-Length header gives the JSON's length."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inputs": [{"name": "latents", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.5]}]}]})
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_output; reconstruct: sample, seed; sample: count, seed")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Datatype
    parameters: dict[str, Any] | None = None
    data: list[float] | None = Field(None, description="flat, row-major; absent when in the binary tail")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(BaseModel):
    error: str
    request_id: str | None = None  # the request's X-Request-ID; an addition the protocol's clients ignore


def _inline(schema: dict) -> dict:
    """A JSON schema with its $defs written in place: openapi_extra is copied into the document as it is, where
    pydantic's #/$defs references would not resolve."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def error_doc(description: str, headers: dict | None = None) -> dict:
    response: dict = {"model": ErrorResponse, "description": description}
    if headers:
        response["headers"] = headers
    return response


AUTH_ERRORS = {401: error_doc("missing or invalid API key"), 403: error_doc("the key lacks the 'infer' scope"),
               429: error_doc("the key's request rate is used up", _RETRY_AFTER)}
MODEL_ERRORS = {**AUTH_ERRORS, 404: error_doc("no such protocol model or version"),
                503: error_doc("no model loaded yet", _RETRY_AFTER)}
INFER_ERRORS = {
    **MODEL_ERRORS,
    413: error_doc("body or item count over the limit"),
    415: error_doc("a content type other than JSON or application/octet-stream"),
    422: error_doc("malformed request, unknown input or output, wrong datatype, shape or binary size"),
    503: error_doc("queue full, no model loaded yet, or draining", _RETRY_AFTER),
    504: error_doc("waited too long in the queue"),
}
NOT_READY = {503: error_doc("loading, nothing loaded, or draining", _RETRY_AFTER)}
_HEADER = {HEADER_LENGTH.title(): {"description": "bytes of JSON before the binary tensors", "schema": {"type": "integer"}}}
INFER_REPLY = {200: {"model": InferenceResponse, "headers": _HEADER, "content": {
    OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    "description": "JSON; with binary outputs the JSON then the tensors, Inference-Header-Content-Length set"}}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
    OCTET_STREAM: {"schema": {"type": "string", "format": "binary"},
                   "description": "the JSON request then binary tensors; Inference-Header-Content-Length set"},
}}}


def path_parameters(version: bool) -> list[dict]:
    params = [{"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "<model>-<operation>, e.g. vae-encode"}]
    if version:
        params.append({"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}})
    return params
