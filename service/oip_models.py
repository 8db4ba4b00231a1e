"""Each (model, operation) as one protocol model named `<model>-<operation>`: the tensors it takes and gives (the
one source for metadata, input checks and output names), how its inputs become the batcher's rows, and how the
batcher's outputs become named tensors. Pixel and latent checks are the service's own (service/codecs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from lvm.networks import INPUT_DIM
from service import codecs, routes
from service.errors import InvalidInput, UnknownModel
from service.models import OPERATIONS, ServedModel
from service.oip_tensors import InferRequest

SAMPLE_COUNT = 16  # draws when a sample request gives no count, as for /sample


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatypes: tuple[str, ...]  # accepted; metadata shows the first
    shape: tuple[int, ...]  # -1: any size
    optional: bool = False

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatypes[0], "shape": list(self.shape)}


def split_name(protocol_name: str) -> tuple[str, str]:
    """(model, operation) from `<model>-<operation>`; the operation is the last `-` part, so model names keep
    their own rules (dashes included)."""
    model, _, op = protocol_name.rpartition("-")
    if not model or op not in OPERATIONS:
        raise UnknownModel(f"protocol model {protocol_name[:64]!r} is not <model>-<operation> with an operation "
                           f"among {', '.join(OPERATIONS)}")
    return model, op


@cache  # a handful of distinct signatures, asked for twice per request
def signature(op: str, latent_dim: int, has_scale: bool) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of one operation of a model with latent dimension K (`scale` only if it has one).
    Images also come as [-1, 28, 28]; codecs accepts both layouts."""
    images_in = TensorSpec("images", ("FP32", "UINT8"), (-1, INPUT_DIM))
    images_out = TensorSpec("images", ("FP32",), (-1, INPUT_DIM))
    latents = TensorSpec("latents", ("FP32",), (-1, latent_dim))
    posterior = (TensorSpec("mean", ("FP32",), (-1, latent_dim)),)
    if has_scale:
        posterior += (TensorSpec("scale", ("FP32",), (-1, latent_dim)),)
    return {
        "encode": ((images_in,), posterior),
        "decode": ((latents,), (images_out,)),
        "reconstruct": ((images_in,), (images_out, *posterior)),
        "sample": ((TensorSpec("seed", ("INT64",), (1,), optional=True),), (latents, images_out)),
    }[op]


def metadata(protocol_name: str, served: ServedModel, versions: list[int], op: str) -> dict:
    inputs, outputs = signature(op, served.latent_dim, served.has_scale)
    return {"name": protocol_name, "versions": [str(v) for v in versions], "platform": f"latentserve_{served.kind}",
            "inputs": [t.metadata() for t in inputs], "outputs": [t.metadata() for t in outputs]}


def rows(op: str, served: ServedModel, request: InferRequest, max_items: int) -> np.ndarray:
    """The batcher's rows for a request (see service/models.py for each operation's layout); every check is made
    here, before anything is queued, the outputs asked for included."""
    inputs, outputs = signature(op, served.latent_dim, served.has_scale)
    arrays = _inputs(request, inputs)
    if request.outputs is not None:
        names = [t.name for t in outputs]
        for name in request.outputs:
            if name not in names:
                raise InvalidInput(f"output {name[:64]!r} does not exist; {op} gives {', '.join(names)}")
    k = served.latent_dim
    if op == "encode":
        return codecs.images_from_array(arrays["images"], max_items)
    if op == "decode":
        return codecs.latents_from_array(arrays["latents"], k, max_items)
    if op == "reconstruct":
        x = codecs.images_from_array(arrays["images"], max_items)
        sample = request.parameters.get("sample", False)
        if not isinstance(sample, bool):
            raise InvalidInput("parameter 'sample' must be true or false")
        eps = routes.noise(len(x), k, _seed(request, None)) if sample else np.zeros((len(x), k), np.float32)
        return np.concatenate([x, eps], axis=1)
    count = request.parameters.get("count", SAMPLE_COUNT)
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidInput("parameter 'count' must be an integer")
    codecs.check_count(count, max_items, "samples")
    return routes.noise(count, k, _seed(request, arrays.get("seed")))


def _inputs(request: InferRequest, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The request's arrays by name, each one the operation takes and of an accepted datatype."""
    by_name = {t.name: t for t in specs}
    for name, tensor in request.inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise InvalidInput(f"input {name[:64]!r} is not taken here; inputs: {', '.join(by_name)}")
        if tensor.datatype not in spec.datatypes:
            raise InvalidInput(f"input {name!r} must be {' or '.join(spec.datatypes)}, got {tensor.datatype}")
    for spec in specs:
        if not spec.optional and spec.name not in request.inputs:
            raise InvalidInput(f"input {spec.name!r} is missing")
    return {name: tensor.array for name, tensor in request.inputs.items()}


def _seed(request: InferRequest, given: np.ndarray | None) -> int:
    """The request's seed: an INT64 input `seed` of one element or parameter `seed` (not both); random if neither."""
    value = request.parameters.get("seed")
    if given is not None:
        if given.size != 1:
            raise InvalidInput(f"input 'seed' must hold one integer, got shape {list(given.shape)}")
        if value is not None:
            raise InvalidInput("give the seed as an input or as a parameter, not both")
        value = int(given.reshape(-1)[0])
    return codecs.seed(value)


def outputs(op: str, served: ServedModel, request: InferRequest,
            arrays: tuple[np.ndarray, ...]) -> list[tuple[str, np.ndarray, bool]]:
    """(name, array, binary) for each output asked for (all when none were named), in the order asked."""
    specs = signature(op, served.latent_dim, served.has_scale)[1]
    named = {spec.name: array for spec, array in zip(specs, arrays, strict=True)}
    order = list(request.outputs) if request.outputs is not None else list(named)
    return [(name, named[name], request.binary(name)) for name in order]
