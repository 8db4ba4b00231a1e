"""Each (model, operation) as one protocol model named `<model>-<operation>`, read off service/operations.py's table:
the tensors it takes and gives (the one source for metadata, input checks and output names), how its inputs become
the batcher's rows, and how the batcher's outputs become named tensors. Pixel and latent checks are the service's own
(service/codecs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInput, UnknownModel
from service.models import ServedModel
from service.operations import OPERATIONS, SEED, Call, Operation, Output
from service.oip_tensors import InferRequest
from service.settings import Settings

_SEED_INPUT = "seed"  # sample's seed may also come as an INT64 input tensor of one element (Triton's habit)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatypes: tuple[str, ...]  # accepted; metadata shows the first
    shape: tuple[int, ...]  # -1: any size
    optional: bool = False

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatypes[0], "shape": list(self.shape)}


def split_name(protocol_name: str) -> tuple[str, Operation]:
    """(model, operation) from `<model>-<operation>`; the operation is the last `-` part, so model names keep
    their own rules (dashes included)."""
    model, _, op = protocol_name.rpartition("-")
    if not model or op not in OPERATIONS:
        raise UnknownModel(f"protocol model {protocol_name[:64]!r} is not <model>-<operation> with an operation "
                           f"among {', '.join(OPERATIONS)}")
    return model, OPERATIONS[op]


def _output_spec(out: Output, served: ServedModel) -> TensorSpec:
    shape = (-1,) if out.width is None else (-1, out.width(served))
    return TensorSpec(out.name, (out.datatype,), shape)


def signature(op: Operation, served: ServedModel) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of one operation of a loaded version (kept on it: asked for on every request).
    Images also come as [-1, 28, 28]; codecs accepts both layouts."""
    known = served.signatures.get(op.name)
    if known is None:
        inputs = tuple(TensorSpec(i.name, i.datatypes, (-1, i.width(served))) for i in op.inputs)
        if SEED in op.params and not op.inputs:
            inputs += (TensorSpec(_SEED_INPUT, ("INT64",), (1,), optional=True),)
        known = served.signatures[op.name] = (inputs, tuple(_output_spec(out, served) for out in op.given(served)))
    return known


def metadata(protocol_name: str, served: ServedModel, versions: list[int], op: Operation) -> dict:
    inputs, outputs = signature(op, served)
    return {"name": protocol_name, "versions": [str(v) for v in versions], "platform": f"latentserve_{served.kind}",
            "inputs": [t.metadata() for t in inputs], "outputs": [t.metadata() for t in outputs]}


def rows(op: Operation, served: ServedModel, request: InferRequest, settings: Settings) -> np.ndarray:
    """The batcher's rows for a request; every check is made here, before anything is queued, the outputs asked
    for and every parameter included."""
    inputs, outputs = signature(op, served)
    arrays = _inputs(request, inputs)
    if request.outputs is not None:
        names = [t.name for t in outputs]
        for name in request.outputs:
            if name not in names:
                raise InvalidInput(f"output {name[:64]!r} does not exist; {op.name} gives {', '.join(names)}")
    params = {p.name: _parameter(p.name, p.parse, request.parameters.get(p.name)) for p in op.params}
    given_seed = arrays.pop(_SEED_INPUT, None)
    if given_seed is not None:
        if given_seed.size != 1:
            raise InvalidInput(f"input 'seed' must hold one integer, got shape {list(given_seed.shape)}")
        if request.parameters.get("seed") is not None:
            raise InvalidInput("give the seed as an input or as a parameter, not both")
        params["seed"] = _parameter("seed", SEED.parse, int(given_seed.reshape(-1)[0]))
    max_items = settings.max_items_per_request
    call = Call({i.name: i.from_array(arrays[i.name], served, max_items) for i in op.inputs}, params)
    return op.pack(served, call, settings)


def _parameter(name: str, parse, value: object):
    try:
        return parse(value)
    except InvalidInput as exc:
        raise InvalidInput(f"parameter {exc.detail}") from None


def _inputs(request: InferRequest, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The request's arrays by name, each one the operation takes and of an accepted datatype."""
    by_name = {t.name: t for t in specs}
    for name, tensor in request.inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise InvalidInput(f"input {name[:64]!r} is not taken here; inputs: {', '.join(by_name) or 'none'}")
        if tensor.datatype not in spec.datatypes:
            raise InvalidInput(f"input {name!r} must be {' or '.join(spec.datatypes)}, got {tensor.datatype}")
    for spec in specs:
        if not spec.optional and spec.name not in request.inputs:
            raise InvalidInput(f"input {spec.name!r} is missing")
    return {name: tensor.array for name, tensor in request.inputs.items()}


def outputs(op: Operation, served: ServedModel, request: InferRequest,
            arrays: tuple[np.ndarray, ...]) -> list[tuple[str, np.ndarray, bool]]:
    """(name, array, binary) for each output asked for (all when none were named), in the order asked."""
    named = {out.name: array for out, array in zip(op.given(served), arrays, strict=True)}
    order = list(request.outputs) if request.outputs is not None else list(named)
    return [(name, named[name], request.binary(name)) for name in order]
