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
