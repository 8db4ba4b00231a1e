"""Triton's extensions of the Open Inference Protocol that its tools call first, for the protocol models
`<model>-<operation>` (service/oip_models.py): model configuration, model repository (the index; loading and unloading
are not supported: the service serves what its artifacts folder holds, POST /admin/reload picks up new versions) and
statistics, read from the batchers' own counters (service/metrics.py). Listed in the server metadata's extensions.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

import lvm
from service import codecs, oip_models
from service.errors import NotSupported, UnknownModel
from service.metrics import QueueSeries
from service.models import ServedModel
from service.operations import OPERATIONS
from service.oip_schemas import MODEL_ERRORS, error_doc, path_parameters
from service.plumbing import registry_of, state_of
from service.routing import RequestRoute

router = APIRouter(route_class=RequestRoute, tags=["Triton extensions"])
EXTENSIONS = ("model_configuration", "model_repository", "statistics")
_MODEL = "/v2/models/{model_name}"
_VERSION = "/v2/models/{model_name}/versions/{model_version}"
_NOT_SUPPORTED = {400: error_doc("not supported: the service serves every version in its artifacts folder")}


def _json(payload) -> Response:
    return Response(orjson.dumps(payload), media_type=codecs.JSON)


def _served(request: Request) -> list[tuple[str, ServedModel, str]]:
    """(protocol name, version, operation) for every protocol model the path names; all of them without a name."""
    registry = registry_of(request)
    name = request.path_params.get("model_name")
    if name is None:
        return [(f"{model}-{op}", served, op) for model, versions in sorted(registry.models.items())
                for _, served in sorted(versions.items()) for op in served.batchers]
    model, op = oip_models.split_name(name)
    text = request.path_params.get("model_version")
    version = None if text is None else lvm.parse_version(text)
    if text is not None and version is None:
        raise UnknownModel(f"version must be a positive integer in ASCII digits, got {text[:32]!r}")
    latest = registry.get(model, version)  # 404 for an unknown model or version
    if text is None:  # every loaded version, the highest last (the configuration reads that one)
        return [(name, served, op.name) for _, served in sorted(registry.models[model].items())]
    return [(name, latest, op.name)]


def _dims(shape: tuple[int, ...]) -> list[int]:
    """Triton's dims leave out the batch dimension (the leading -1); a scalar per item is [1]."""
    return (list(shape[1:]) or [1]) if shape[:1] == (-1,) else list(shape)


@router.get(_MODEL + "/config", responses=MODEL_ERRORS, summary="Triton model configuration",
            openapi_extra={"parameters": path_parameters(False)})
@router.get(_VERSION + "/config", responses=MODEL_ERRORS, summary="Triton model configuration",
            openapi_extra={"parameters": path_parameters(True)})
async def model_config(request: Request) -> Response:
    name, served, op = _served(request)[-1]
    inputs, outputs = oip_models.signature(OPERATIONS[op], served)
    settings = state_of(request).settings

    def tensor(spec) -> dict:
        entry = {"name": spec.name, "data_type": "TYPE_" + spec.datatypes[0], "dims": _dims(spec.shape)}
        return {**entry, "optional": True} if getattr(spec, "optional", False) else entry

    return _json({
        "name": name, "platform": f"latentserve_{served.kind}", "backend": "latentserve",
        "version_policy": {"latest": {"num_versions": len(registry_of(request).models[served.name])}},
        "max_batch_size": settings.max_items_per_request,
        "input": [tensor(t) for t in inputs], "output": [tensor(t) for t in outputs],
        # The service's batcher: up to max_batch_size items per pass, the first waiting at most max_batch_delay_ms.
        "dynamic_batching": {"max_queue_delay_microseconds": int(settings.max_batch_delay_ms * 1000),
                             "preferred_batch_size": [served.batchers[op].config.max_batch_size]},
        "instance_group": [{"count": 1, "kind": "KIND_GPU" if served.placement.pinned else "KIND_CPU"}],
    })


@router.post("/v2/repository/index", responses=MODEL_ERRORS, summary="Triton model repository index")
async def repository_index(request: Request) -> Response:
    """Every protocol model of every loaded version; all are READY (a version is listed once it is warm)."""
    return _json([{"name": name, "version": str(served.version), "state": "READY"}
                  for name, served, _ in _served(request)])


@router.post("/v2/repository/models/{model_name}/load", responses={**MODEL_ERRORS, **_NOT_SUPPORTED},
             summary="Not supported (Triton's explicit model control)",
             openapi_extra={"parameters": path_parameters(False)})
@router.post("/v2/repository/models/{model_name}/unload", responses={**MODEL_ERRORS, **_NOT_SUPPORTED},
             summary="Not supported (Triton's explicit model control)",
             openapi_extra={"parameters": path_parameters(False)})
async def load_or_unload(request: Request) -> Response:
    raise NotSupported("loading and unloading models is not supported: the service serves every version in its "
                       "artifacts folder; add or remove a version there and POST /admin/reload")


@router.get("/v2/models/stats", responses=MODEL_ERRORS, summary="Triton statistics of every protocol model")
@router.get(_MODEL + "/stats", responses=MODEL_ERRORS, summary="Triton statistics of one protocol model",
            openapi_extra={"parameters": path_parameters(False)})
@router.get(_VERSION + "/stats", responses=MODEL_ERRORS, summary="Triton statistics of one protocol model version",
            openapi_extra={"parameters": path_parameters(True)})
async def statistics(request: Request) -> Response:
    metrics = state_of(request).metrics
    return _json({"model_stats": [_stats(name, served, metrics.queue_series(served.name, served.version, op))
                                  for name, served, op in _served(request)]})


def _duration(count: int, seconds: float) -> dict:
    return {"count": count, "ns": int(seconds * 1e9)}


def _stats(name: str, served: ServedModel, series: QueueSeries | None) -> dict:
    """Triton's statistics from the batcher's counters: requests dispatched (success: their queue time plus the
    compute time of their batches), items, batches, queue and compute time, and per batch size. Failures and the
    copies in and out are not counted separately (compute_infer holds the whole pass)."""
    series = series or QueueSeries()
    queue, compute = series.queue_wait, series.compute
    return {
        "name": name, "version": str(served.version), "last_inference": int(series.last_batch_at * 1000),
        "inference_count": int(series.batch_size.sum), "execution_count": series.batch_size.count,
        "inference_stats": {"success": _duration(queue.count, queue.sum + compute.sum),
                            "queue": _duration(queue.count, queue.sum),
                            "compute_infer": _duration(compute.count, compute.sum)},
        "batch_stats": [{"batch_size": size, "compute_infer": _duration(count, seconds)}
                        for size, (count, seconds) in sorted(series.by_size.items())],
    }
