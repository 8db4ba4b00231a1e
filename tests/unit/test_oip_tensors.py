"""The protocol's tensor parsing and rendering (service/oip_tensors.py) and its model names (oip_models.split_name),
as pure functions."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.errors import InvalidInput, UnknownModel
from service.oip_models import split_name
from service.oip_tensors import parse_request, render


def binary_request(arrays: dict[str, tuple[str, np.ndarray]], **extra) -> tuple[bytes, str]:
    header = orjson.dumps({"inputs": [{"name": n, "datatype": t, "shape": list(a.shape),
                                       "parameters": {"binary_data_size": a.nbytes}} for n, (t, a) in arrays.items()],
                           **extra})
    return header + b"".join(a.tobytes() for _, a in arrays.values()), str(len(header))


def test_binary_inputs_are_read_in_order_from_the_tail():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[7, 8]], np.int64)
    body, length = binary_request({"a": ("FP32", a), "b": ("INT64", b)})
    request = parse_request(body, length)
    np.testing.assert_array_equal(request.inputs["a"].array, a)
    np.testing.assert_array_equal(request.inputs["b"].array, b)
    assert request.inputs["b"].array.dtype == np.int64


def test_flat_and_nested_json_data_give_the_same_row_major_array():
    nested = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    for body in (nested, flat):
        np.testing.assert_array_equal(parse_request(orjson.dumps(body), None).inputs["x"].array, [[1, 2], [3, 4]])


@pytest.mark.parametrize("datatype, data", [("INT64", [1.5]), ("UINT8", [-1]), ("UINT8", [256]), ("BOOL", [1]),
                                            ("INT32", ["1"]), ("FP32", ["x"]), ("FP32", [[1], [2, 3]])])
def test_json_data_that_does_not_fit_its_datatype_is_refused(datatype, data):
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}]}
    with pytest.raises(InvalidInput):
        parse_request(orjson.dumps(body), None)


def test_binary_sizes_must_match_the_shape_and_the_tail():
    body, length = binary_request({"a": ("FP32", np.zeros(4, np.float32))})
    with pytest.raises(InvalidInput, match="after the JSON header"):
        parse_request(body[:-1], length)
    with pytest.raises(InvalidInput, match="follow the JSON header"):
        parse_request(body + b"\0", length)
    with pytest.raises(InvalidInput, match="takes 16"):
        parse_request(body.replace(b'"binary_data_size":16', b'"binary_data_size":12')[:-4],
                      str(int(length)))


def test_outputs_go_binary_by_their_own_flag_else_the_requests():
    body = {"inputs": [], "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
            "parameters": {"binary_data_output": True}}
    request = parse_request(orjson.dumps(body), None)
    assert (request.binary("a"), request.binary("b")) == (False, True)
    assert parse_request(b'{"inputs": []}', None).binary("a") is False


def test_render_puts_binary_outputs_after_the_json_header():
    a, b = np.arange(4, dtype=np.float32).reshape(2, 2), np.ones((1, 3), np.float32)
    body, length = render("m-encode", "2", "id7", [("a", a, True), ("b", b, False)])
    header = orjson.loads(body[:length])
    assert header["id"] == "id7" and header["model_version"] == "2"
    assert header["outputs"][0] == {"name": "a", "datatype": "FP32", "shape": [2, 2],
                                    "parameters": {"binary_data_size": 16}}
    assert header["outputs"][1]["data"] == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 2), a)
    assert render("m-encode", "1", None, [("b", b, False)])[1] is None


def test_protocol_names_split_at_the_last_dash():
    model, op = split_name("my-vae-reconstruct")
    assert (model, op.name) == ("my-vae", "reconstruct")
    for bad in ("vae", "-encode", "vae-embed", "vae-"):
        with pytest.raises(UnknownModel):
            split_name(bad)


@pytest.mark.parametrize("shape", [[2] * 20000, [2**63 - 1] * 5000, [1] * 9, [2**40, 1], [-1, 784], [1.0, 784]])
@pytest.mark.parametrize("binary", [False, True])
def test_shapes_are_bounded_before_any_arithmetic(shape, binary):
    # Unbounded, [2] * 20000 raised ValueError (a product of 6,000 digits put into the message) and a long list of
    # 2**63 - 1 took seconds of quadratic multiplication on the event loop.
    item = {"name": "x", "datatype": "UINT8", "shape": shape}
    item.update({"parameters": {"binary_data_size": 4}} if binary else {"data": [0, 0, 0, 0]})
    body = orjson.dumps({"inputs": [item]})
    with pytest.raises(InvalidInput, match=r"at most 8 integers in \[0, 4294967296\]"):
        parse_request(body + b"\0" * 4 * binary, str(len(body)) if binary else None)


@pytest.mark.parametrize("datatype", ["UINT8", "INT64", "BOOL"])
def test_non_float_json_data_costs_memory_in_proportion_to_the_body(datatype):
    # Parsed without a dtype, one long string among many empty ones made a fixed-width string array as wide as the
    # longest for every element: 80 MB from this 100 kB body (2.6 GB from a 1.4 MB one on a live server).
    import tracemalloc

    data = [""] * 20000 + ["x" * 1000]
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}]})
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="true or false" if datatype == "BOOL" else "must be integers"):
            parse_request(body, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The parsed JSON itself takes about 15 bytes per body byte here (a list slot and an object per element).
    assert peak < 40 * len(body), f"{peak} bytes allocated for a {len(body)}-byte body"


@pytest.mark.parametrize("datatype, data, expected", [
    ("UINT8", [[0, 255], [7, 8]], np.array([[0, 255], [7, 8]], np.uint8)),
    ("INT64", [2**63 - 1], np.array([2**63 - 1], np.int64)),
    ("UINT64", [2**64 - 1], np.array([2**64 - 1], np.uint64)),
    ("BOOL", [True, False], np.array([True, False])),
    ("INT8", [], np.zeros(0, np.int8)),
])
def test_non_float_json_data_parses_into_its_datatype(datatype, data, expected):
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": list(expected.shape), "data": data}]}
    array = parse_request(orjson.dumps(body), None).inputs["x"].array
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("datatype, data", [("INT64", [2**63]), ("UINT64", [-1]), ("INT32", [True]),
                                            ("BOOL", [0]), ("UINT8", [[1], [2, 3]]), ("INT64", [None])])
def test_non_float_json_data_must_be_json_integers_in_range(datatype, data):
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}]}
    with pytest.raises(InvalidInput, match=f"input 'x': {'BOOL' if datatype == 'BOOL' else 'data must be'}"):
        parse_request(orjson.dumps(body), None)


@pytest.mark.parametrize("parameters, outputs", [
    ({"binary_data_output": "yes"}, None),
    ({"binary_data_output": 1}, None),
    ({}, [{"name": "a", "parameters": {"binary_data": "true"}}]),
])
def test_binary_flags_follow_one_rule(parameters, outputs):
    # binary_data_output: "yes" used to be read as false while binary_data: "true" was a 422.
    body = {"inputs": [], "parameters": parameters} | ({"outputs": outputs} if outputs else {})
    with pytest.raises(InvalidInput, match="must be true or false"):
        parse_request(orjson.dumps(body), None)


def test_an_output_asked_for_twice_is_refused():
    body = {"inputs": [], "outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "a"}]}
    with pytest.raises(InvalidInput, match="'a' is asked for twice"):
        parse_request(orjson.dumps(body), None)
