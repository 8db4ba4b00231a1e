"""The explorer page (`GET /`, `static/`) and the two read-only routes it needs beyond the inference API: a version's
test-set embedding and its report PNGs. Artifact files are read through lvm only, by names from lvm's own lists."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from lvm.artifact import ArtifactError
from lvm.embedding import EMBEDDING_FILE, has_embedding, read_embedding
from lvm.reports import REPORT_FILES, read_report, report_files
from service import codecs
from service.errors import Internal, NotFound
from service.models import ServedModel
from service.plumbing import json_reply, registry_of
from service.routing import RequestRoute
from service.schemas import AUTH_ERRORS, ErrorBody

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
PAGE_PATHS = frozenset(("/", "/favicon.ico"))  # with STATIC_PREFIX: what the browser loads before it has a key

router = APIRouter(route_class=RequestRoute)
log = logging.getLogger("service.pages")
_NOT_FOUND = {404: {"model": ErrorBody, "description": "no such model, version or file"}}


def _served(request: Request, name: str, version: str) -> ServedModel:
    return registry_of(request).resolve(name, version)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/models/{name}/versions/{version}/embedding", summary="The test set's posterior means and labels",
            response_class=Response, responses={**AUTH_ERRORS, **_NOT_FOUND, 200: {"content": {
                codecs.JSON: {"example": {"count": 2, "latent_dim": 2, "mean": [[0.1, -1.2], [1.5, 0.3]],
                                          "scale": [[0.05, 0.07], [0.06, 0.05]], "label": [7, 2]}},
                codecs.NPY: {"schema": {"type": "string", "format": "binary"}}}}},
            description="JSON `{count, latent_dim, mean (N, K), scale (N, K) or null, label (N,)}`, or with "
                        "`Accept: application/x-npy` one float32 array (N, 2K + 1) with columns mean | scale | "
                        "label ((N, K + 1) when the model has no scale; `X-Embedding-Columns` names them). 404 when "
                        "the artifact was written without an embedding.")
async def embedding(request: Request, name: str, version: str) -> Response:
    served = _served(request, name, version)
    manifest = served.artifact.manifest
    if not has_embedding(manifest):
        raise NotFound(f"{served.name}/{served.version} has no embedding: it was written without "
                       f"{EMBEDDING_FILE} (derive a new version with `python -m training derive`)")
    try:
        data = await asyncio.to_thread(read_embedding, served.artifact.path, manifest)
    except ArtifactError as exc:
        log.error("%s", exc)
        raise Internal(f"the embedding of {served.name}/{served.version} cannot be read") from None
    if codecs.reply_format(request.headers.get("accept")) != "npy":
        return json_reply({"model": served.name, "version": served.version, **data.to_json()})
    parts = [data.mean] + ([data.scale] if data.scale is not None else []) + [data.label[:, None]]
    k = data.mean.shape[1]
    columns = f"mean:{k}," + (f"scale:{k}," if data.scale is not None else "") + "label:1"
    return Response(codecs.npy_bytes(np.concatenate(parts, axis=1).astype(np.float32)), media_type=codecs.NPY,
                    headers={"X-Embedding-Columns": columns, "X-Model": served.name,
                             "X-Model-Version": str(served.version)})


@router.get("/models/{name}/versions/{version}/classes", summary="Each digit's latent distribution",
            response_class=Response, responses={**AUTH_ERRORS, **_NOT_FOUND, 200: {"content": {codecs.JSON: {
                "example": {"model": "vae", "version": 3, "native": False, "classes": 10, "components": 1,
                            "latent_dim": 2, "weight": [[1.0]], "loc": [[[0.1, -1.2]]],
                            "covariance": [[[[0.2, 0.01], [0.01, 0.3]]]]}}}}},
            description="p(z | digit) for digits 0-9 as mixtures: `weight` (10, M), `loc` (10, M, K), `covariance` "
                        "(10, M, K, K). `native` is true for a conditional model (the cvae), whose prior N(0, I) is "
                        "every digit's; for the others it is the density fitted after training to the training "
                        "set's posterior means (`manifest.class_density`). 404 when the version has none.")
async def classes(request: Request, name: str, version: str) -> Response:
    served = _served(request, name, version)
    density = served.model.digit_density()
    if density is None:
        raise NotFound(f"{served.name}/{served.version} has no distribution per digit: its artifact has no "
                       "classes.safetensors (`python -m training derive --add classes` adds one)")
    return json_reply({"model": served.name, "version": served.version, "native": served.conditional,
                       **density.to_json()})


@router.get("/models/{name}/versions/{version}/report/{file}", summary="One of the version's report PNGs",
            response_class=Response, responses={**AUTH_ERRORS, **_NOT_FOUND, 200: {"content": {codecs.PNG: {}}}},
            description=f"`file` is one of {', '.join(REPORT_FILES)}; the version's manifest lists which it has.")
async def report(request: Request, name: str, version: str, file: str) -> Response:
    served = _served(request, name, version)
    manifest = served.artifact.manifest
    if file not in report_files(manifest):
        available = ", ".join(report_files(manifest)) or "none"
        raise NotFound(f"{served.name}/{served.version} has no report file {file[:64]!r}; it has: {available}")
    try:
        content = await asyncio.to_thread(read_report, served.artifact.path, manifest, file)
    except ArtifactError as exc:
        log.error("%s", exc)
        raise Internal(f"report/{file} of {served.name}/{served.version} cannot be read") from None
    return Response(content, media_type=codecs.PNG, headers={"Cache-Control": "max-age=3600"})


router.routes.append(Mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static"))
