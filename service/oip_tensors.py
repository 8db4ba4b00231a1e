"""Tensors of the Open Inference Protocol (KServe v2): an inference request's JSON header and binary tail (the binary
tensor data extension) to named numpy arrays in their declared shapes, and named arrays back to a reply.

Pure functions of bytes and arrays; which tensors a protocol model takes and gives is service/oip_models.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import orjson

from service import codecs
from service.errors import InvalidInput

HEADER_LENGTH = "inference-header-content-length"  # the JSON header's size when a binary tail follows
OCTET_STREAM = "application/octet-stream"
# The protocol's datatypes this service reads and writes (BYTES, the one string type, has no use here).
DATATYPES: dict[str, np.dtype] = {name: np.dtype(t).newbyteorder("<") for name, t in (
    ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64),
    ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64),
    ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64),
)}
_NAMES = {dtype.newbyteorder("="): name for name, dtype in DATATYPES.items()}
# A tensor's shape is bounded before any arithmetic on it: the product of an unbounded list of unbounded integers
# costs time quadratic in the list's length (on the event loop) and cannot even be formatted past 4,300 digits. The
# models take two dimensions (three for 28x28 images); these bounds are generous and keep any product cheap.
MAX_DIMS = 8
MAX_DIM = 2**32


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # in the shape the request declared


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: dict[str, bool | None] | None  # the outputs asked for -> binary_data (None: not said); None: all
    parameters: dict
    binary_data_output: bool = False  # the request's default for outputs that say nothing

    def binary(self, output: str) -> bool:
        """Whether an output goes in the binary tail: its own binary_data, else the request's binary_data_output."""
        own = self.outputs.get(output) if self.outputs else None
        return own if own is not None else self.binary_data_output


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request in `body`; `header_length` is the Inference-Header-Content-Length header (None: all JSON)."""
    header, tail = _split(body, header_length)
    obj = codecs.load_json(header)
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    inputs, used = {}, 0
    for i, item in enumerate(_list(obj.get("inputs", []), "inputs")):
        tensor, used = _input(item, i, tail, used)
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} is given twice")
        inputs[tensor.name] = tensor
    if used != len(tail):
        raise InvalidInput(f"the inputs' binary_data_size add up to {used} bytes, but {len(tail)} bytes follow the "
                           "JSON header")
    parameters = _parameters(obj.get("parameters"), "request")
    return InferRequest(request_id, inputs, _outputs(obj.get("outputs")), parameters,
                        flag(parameters, "binary_data_output", "the request") is True)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):  # headers arrive as latin-1: "²" is a digit to str.isdigit
        raise InvalidInput(f"Inference-Header-Content-Length must be a byte count, got {header_length[:32]!r}")
    n = int(text)
    if n > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length is {n}, but the body has only {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise InvalidInput(f"'{what}' must be a list")
    return value


def _parameters(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"the parameters of {where} must be a JSON object")
    return value


def flag(parameters: dict, key: str, where: str) -> bool | None:
    """A boolean parameter: JSON true or false, None when absent; anything else ("yes", 1, "true") is a 422, so that
    no flag is ever read as false because it was spelled differently."""
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {key!r} must be true or false, got {str(value)[:32]!r}")
    return value


def shape_of(value: object, name: str) -> list[int]:
    """A tensor's declared shape: at most MAX_DIMS integers in [0, MAX_DIM], checked before anything multiplies
    them."""
    if not isinstance(value, list) or len(value) > MAX_DIMS or not all(
            type(d) is int and 0 <= d <= MAX_DIM for d in value):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of at most {MAX_DIMS} integers in [0, {MAX_DIM}]")
    return value


def _input(item: object, index: int, tail: memoryview, used: int) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of the binary tail are used once it is read."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput(f"input {index} must be an object with a 'name'")
    name, datatype = item["name"], item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: datatype {str(datatype)[:16]!r} is not one of {', '.join(DATATYPES)}")
    shape = shape_of(item.get("shape"), name)
    dtype, count = DATATYPES[datatype], math.prod(shape)
    size = _parameters(item.get("parameters"), f"input {name!r}").get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        return Tensor(name, datatype, _from_json(item["data"], dtype, count, name).reshape(shape)), used
    if "data" in item:
        raise InvalidInput(f"input {name!r} has both 'data' and parameters.binary_data_size")
    if type(size) is not int or size < 0:
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
    if size != count * dtype.itemsize:
        raise InvalidInput(f"input {name!r}: binary_data_size is {size} bytes, but shape {shape} of {datatype} takes "
                           f"{count * dtype.itemsize}")
    if used + size > len(tail):
        raise InvalidInput(f"input {name!r}: the inputs' binary_data_size add up to more than the {len(tail)} bytes "
                           "after the JSON header")
    array = np.frombuffer(tail, dtype, count, used).astype(dtype.newbyteorder("="), copy=False)
    return Tensor(name, datatype, array.reshape(shape)), used + size


def _from_json(data: object, dtype: np.dtype, count: int, name: str) -> np.ndarray:
    """The `data` of a JSON tensor, flat or nested in row-major order, as `count` elements of `dtype`. Memory stays
    proportional to the body: every array built here has a fixed item size of at most 8 bytes (letting numpy infer a
    type from mixed elements would make a fixed-width string array, as wide as the longest string, for every one)."""
    native = dtype.newbyteorder("=")
    try:
        if dtype.kind == "f":  # straight to the float type: twice as fast as letting numpy infer one
            with np.errstate(over="ignore"):
                array = np.array(data, native)
        else:
            array = _integers(np.array(data, object), native, name)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: 'data' must be a flat or nested list of numbers") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: 'data' holds {array.size} elements, but its shape says {count}")
    return array.reshape(-1)


def _integers(elements: np.ndarray, native: np.dtype, name: str) -> np.ndarray:
    """Integer (or boolean) data from an array of the JSON values themselves (pointers to them, no copies): each
    element must be a JSON integer in the datatype's range (true/false for BOOL), never a float, string or list."""
    wanted = bool if native.kind == "b" else int  # type() tells bool from int: True is no integer here
    if not all(type(v) is wanted for v in elements.flat):
        if native.kind == "b":
            raise InvalidInput(f"input {name!r}: BOOL data must be true or false")
        info = np.iinfo(native)
        raise InvalidInput(f"input {name!r}: data must be integers in [{info.min}, {info.max}]")
    try:
        return elements.astype(native)
    except OverflowError:
        info = np.iinfo(native)
        raise InvalidInput(f"input {name!r}: data must be integers in [{info.min}, {info.max}]") from None


def _outputs(value: object) -> dict[str, bool | None] | None:
    if value is None:
        return None
    wanted = {}
    for i, item in enumerate(_list(value, "outputs")):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"output {i} must be an object with a 'name'")
        name = item["name"]
        if name in wanted:
            raise InvalidInput(f"output {name[:64]!r} is asked for twice")
        wanted[name] = flag(_parameters(item.get("parameters"), f"output {name[:64]!r}"), "binary_data",
                            f"output {name[:64]!r}")
    return wanted


def datatype(array: np.ndarray) -> str:
    return _NAMES[array.dtype.newbyteorder("=")]


def render(model_name: str, model_version: str, request_id: str | None,
           outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """The reply to (name, array, binary) outputs: its bytes, and the JSON header's length when a binary tail
    follows (for the Inference-Header-Content-Length header), else None."""
    header: dict = {"model_name": model_name, "model_version": model_version, "outputs": []}
    if request_id is not None:
        header["id"] = request_id
    tail = []
    for name, array, binary in outputs:
        entry = {"name": name, "datatype": datatype(array), "shape": list(array.shape)}
        if binary:
            data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            tail.append(data)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)  # orjson writes numpy arrays natively
        header["outputs"].append(entry)
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return text, None
    return b"".join([text, *tail]), len(text)
