"""The explorer page (`GET /`, `static/`) and the read-only routes it needs beyond the inference API: a version's
test-set embedding, its report PNGs and its reference set's score histogram. Artifact files are read through lvm only, by names from lvm's own lists."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from lvm.artifact import ArtifactError
from lvm.embedding import EMBEDDING_FILE, has_embedding, read_embedding
from lvm.reports import REPORT_DIR, REPORT_FILES, read_report, report_files
from service import codecs
from service.errors import NotFound
from service.models import ServedModel
from service.plumbing import json_reply, registry_of
from service.routing import RequestRoute
from service.schemas import PAGE_DATA_ERRORS

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
PAGE_PATHS = frozenset(("/", "/favicon.ico"))  # with STATIC_PREFIX: what the browser loads before it has a key

router = APIRouter(route_class=RequestRoute)
log = logging.getLogger("service.pages")


_CACHED_REPLIES = 16  # rendered embeddings and report PNGs kept; the largest, a 10,000-point JSON, is ~1.1 MB


class _VersionFiles:
    """Replies built from a loaded version's files (its embedding, its report PNGs), read, checked and rendered once:
    a version's files are immutable, and the manifest's SHA-256 names their content, so the key (folder, file,
    SHA-256, format) never goes stale and makes the ETag. A file removed or changed on disk after loading is a 404
    until the next reload drops or replaces the version, logged once per file (not once per request)."""

    def __init__(self, size: int) -> None:
        self._replies: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = size
        self._logged: set[tuple] = set()

    async def get(self, served: ServedModel, file: str, fmt: str, build: Callable[[], bytes]) -> bytes:
        key = (str(served.artifact.path), file, served.artifact.manifest["files"][file], fmt)
        if key in self._replies:
            self._replies.move_to_end(key)
            return self._replies[key]
        try:
            reply = await asyncio.to_thread(build)
        except ArtifactError as exc:
            if key not in self._logged:
                self._logged.add(key)
                log.warning("%s (answered 404 until a reload)", exc)
            raise NotFound(f"{file} of {served.name}/{served.version} is no longer on disk as it was loaded (removed "
                           "or changed since); a reload will drop or replace the version") from None
        self._replies[key] = reply
        while len(self._replies) > self._size:
            self._replies.popitem(last=False)
        return reply


_files = _VersionFiles(_CACHED_REPLIES)


def _etag(served: ServedModel, file: str, fmt: str) -> str:
    return f'"{served.name}-{served.version}-{served.artifact.manifest["files"][file][:32]}-{fmt}"'


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    return wanted is not None and any(tag.strip() in (etag, "*", "W/" + etag) for tag in wanted.split(","))


def _cached_reply(content: bytes | None, media_type: str, headers: dict[str, str]) -> Response:
    """200 with the content, or 304 (no body) when content is None; the same validators on both."""
    if content is None:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


def _served(request: Request, name: str, version: str) -> ServedModel:
    return registry_of(request).resolve(name, version)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


_EMBEDDING_NPY = "float32 (N, 2K + 1): mean | scale | label columns, (N, K + 1) without a scale"
_VALIDATORS = {"ETag": {"description": "names the content; send it back in If-None-Match for a 304",
                        "schema": {"type": "string"}}}
_NOT_MODIFIED = {304: {"description": "If-None-Match named the current ETag: no body", "headers": _VALIDATORS}}


@router.get("/models/{name}/versions/{version}/embedding", summary="The test set's posterior means and labels",
            response_class=Response, responses={**PAGE_DATA_ERRORS, **_NOT_MODIFIED, 200: {
                "headers": _VALIDATORS, "content": {
                    codecs.JSON: {"example": {"count": 2, "latent_dim": 2, "mean": [[0.1, -1.2], [1.5, 0.3]],
                                              "scale": [[0.05, 0.07], [0.06, 0.05]], "label": [7, 2]}},
                    codecs.NPY: {"schema": {"type": "string", "format": "binary", "description": _EMBEDDING_NPY}}}}},
            description="JSON `{count, latent_dim, mean (N, K), scale (N, K) or null, label (N,)}`, or with "
                        "`Accept: application/x-npy` one float32 array (N, 2K + 1) with columns mean | scale | "
                        "label ((N, K + 1) when the model has no scale; `X-Embedding-Columns` names them). 404 when "
                        "the artifact was written without an embedding. Read once per loaded version; `ETag` and "
                        "`If-None-Match` make a repeated GET a 304.")
async def embedding(request: Request, name: str, version: str) -> Response:
    served = _served(request, name, version)
    manifest = served.artifact.manifest
    if not has_embedding(manifest):
        raise NotFound(f"{served.name}/{served.version} has no embedding: it was written without "
                       f"{EMBEDDING_FILE} (derive a new version with `python -m training derive`)")
    fmt = "npy" if codecs.reply_format(request.headers.get("accept")) == "npy" else "json"
    k = served.latent_dim
    headers = {"ETag": _etag(served, EMBEDDING_FILE, fmt), "Vary": "Accept"}
    if fmt == "npy":
        headers |= {"X-Embedding-Columns": f"mean:{k}," + ("scale:" + str(k) + "," if served.has_scale else "")
                    + "label:1", "X-Model": served.name, "X-Model-Version": str(served.version)}
    if _not_modified(request, headers["ETag"]):
        return _cached_reply(None, "", headers)
    content = await _files.get(served, EMBEDDING_FILE, fmt, lambda: _render_embedding(served, fmt))
    return _cached_reply(content, codecs.NPY if fmt == "npy" else codecs.JSON, headers)


def _render_embedding(served: ServedModel, fmt: str) -> bytes:
    data = read_embedding(served.artifact.path, served.artifact.manifest)
    if fmt == "json":
        return orjson.dumps({"model": served.name, "version": served.version, **data.to_json()},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    parts = [data.mean] + ([data.scale] if data.scale is not None else []) + [data.label[:, None]]
    return codecs.npy_bytes(np.concatenate(parts, axis=1).astype(np.float32))


@router.get("/models/{name}/versions/{version}/classes", summary="Each digit's latent distribution",
            response_class=Response, responses={**PAGE_DATA_ERRORS, 200: {"content": {codecs.JSON: {
                "example": {"model": "vae", "version": 3, "native": False, "classes": 10, "components": 1,
                            "latent_dim": 2, "weight": [[1.0]], "loc": [[[0.1, -1.2]]],
                            "covariance": [[[[0.2, 0.01], [0.01, 0.3]]]]}}}}},
            description="p(z | digit) for digits 0-9 as mixtures: `weight` (10, M), `loc` (10, M, K), `covariance` "
                        "(10, M, K, K). `native` is true for a conditional model (the cvae) without a fitted density, "
                        "whose prior N(0, I) is every digit's; otherwise it is the density fitted after training to "
                        "the training set's posterior means (`manifest.class_density`; the cvae's given each image's "
                        "digit). 404 when the version has none.")
async def classes(request: Request, name: str, version: str) -> Response:
    served = _served(request, name, version)
    density = served.model.digit_density()
    if density is None:
        raise NotFound(f"{served.name}/{served.version} has no distribution per digit: its artifact has no "
                       "classes.safetensors (`python -m training derive --add classes` adds one)")
    return json_reply({"model": served.name, "version": served.version, "native": served.model.class_density is None,
                       **density.to_json()})


@router.get("/models/{name}/versions/{version}/report/{file}", summary="One of the version's report PNGs",
            response_class=Response, responses={**PAGE_DATA_ERRORS, **_NOT_MODIFIED, 200: {
                "headers": _VALIDATORS, "content": {codecs.PNG: {"schema": {"type": "string", "format": "binary"}}}}},
            description=f"`file` is one of {', '.join(REPORT_FILES)}; `/models/{{name}}` lists, per version, "
                        "which it has (`reports`).")
async def report(request: Request, name: str, version: str, file: str) -> Response:
    served = _served(request, name, version)
    manifest = served.artifact.manifest
    if file not in report_files(manifest):
        available = ", ".join(report_files(manifest)) or "none"
        raise NotFound(f"{served.name}/{served.version} has no report file {file[:64]!r}; it has: {available}")
    rel = f"{REPORT_DIR}/{file}"
    headers = {"ETag": _etag(served, rel, "png"), "Cache-Control": "max-age=3600"}
    if _not_modified(request, headers["ETag"]):
        return _cached_reply(None, "", headers)
    content = await _files.get(served, rel, "png", lambda: read_report(served.artifact.path, manifest, file))
    return _cached_reply(content, codecs.PNG, headers)


_REFERENCE_BINS = 48


@router.get("/models/{name}/versions/{version}/reference", summary="The score distribution of the reference set",
            response_class=Response, responses={**PAGE_DATA_ERRORS, 200: {"content": {codecs.JSON: {"example": {
                "model": "vae", "version": 3, "images": "validation split", "count": 5000, "samples": 100,
                "method": "tails", "false_positive_rate": 0.01,
                "log_likelihood": {"edges": [-400.0, -390.0, -380.0], "counts": [1, 3]}}}}}},
            description="What `/score`'s percentile and outlier verdict compare an image with: which images the "
                        "reference set holds, the rule and its flag rate, and a histogram of their log-likelihoods "
                        "(the page draws it with the scored image marked). 404 for a version without one.")
async def reference(request: Request, name: str, version: str) -> Response:
    served = _served(request, name, version)
    if served.reference is None:
        raise NotFound(f"{served.name}/{served.version} has no reference set: /score gives no percentile or "
                       "verdict for it (derive a new version with `python -m training derive`)")
    info, values = served.reference.info, served.reference.features["log_likelihood"]
    low, high = np.percentile(values, [0.5, 100])  # the far lower tail would squash the histogram into one bar
    counts, edges = np.histogram(np.clip(values, low, high), bins=_REFERENCE_BINS, range=(low, high))
    return Response(orjson.dumps({
        "model": served.name, "version": served.version, "images": info.get("images"), "count": len(values),
        "samples": info.get("samples"), "method": info.get("method"),
        "false_positive_rate": info.get("false_positive_rate"),
        "log_likelihood": {"edges": edges.round(3).tolist(), "counts": counts.tolist()}}), media_type=codecs.JSON)


router.routes.append(Mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static"))
