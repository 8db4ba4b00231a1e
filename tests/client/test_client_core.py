"""The client's pure parts: one exception class per service error type, the retry decisions on a fake clock,
learning the limit from a 413, version pinning rules, and turning every accepted input into one batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from latentserve_client import BY_TYPE, Overloaded, Retry, ServiceError, Timeout, errors, inputs
from latentserve_client._core import Attempts, Call, Core, Plan
from PIL import Image

import service.errors
from tests.helpers import IMAGES_U8, png_bytes


def _service_error_classes(cls=service.errors.ServiceError):
    for sub in cls.__subclasses__():
        yield sub
        yield from _service_error_classes(sub)


def test_every_service_error_type_has_its_own_class_with_the_same_status():
    served = {cls.type: cls.status for cls in _service_error_classes()}
    assert served, "no error classes found in service.errors"
    for type_, status in served.items():
        assert BY_TYPE[type_].status == status, type_


def test_an_error_reply_becomes_its_class_with_detail_and_retry_after():
    err = errors.from_reply(503, {"retry-after": "3"}, b'{"detail": "queue full", "type": "overloaded"}')
    assert isinstance(err, Overloaded) and err.detail == "queue full" and err.retry_after == 3.0
    odd = errors.from_reply(418, {}, b'{"detail": "teapot", "type": "brewing"}')
    assert type(odd) is ServiceError and (odd.status, odd.type, odd.detail) == (418, "brewing", "teapot")
    assert isinstance(errors.from_reply(504, {}, b"gateway timeout"), Timeout)  # a proxy's page: by status
    assert str(err) == "503 overloaded: queue full"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attempts(rand: float = 0.0, **policy) -> tuple[Attempts, FakeClock]:
    clock = FakeClock()
    return Attempts(Retry(**policy), timeout_s=30.0, clock=clock, rand=lambda: rand), clock


def test_backoff_doubles_between_half_and_all_of_each_step():
    low, _ = attempts(rand=0.0, backoff_s=0.1, max_backoff_s=0.3, max_attempts=10)
    high, _ = attempts(rand=1.0, backoff_s=0.1, max_backoff_s=0.3, max_attempts=10)
    gone = Timeout("slow")
    waits_low, waits_high = [], []
    for _ in range(4):
        low.next_timeout(), high.next_timeout()
        waits_low.append(low.wait_s(gone))
        waits_high.append(high.wait_s(gone))
    assert waits_low == pytest.approx([0.05, 0.1, 0.15, 0.15])
    assert waits_high == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_retry_after_is_honoured_up_to_the_cap_and_the_deadline():
    a, clock = attempts(max_retry_after_s=5.0, deadline_s=20.0)
    a.next_timeout()
    assert a.wait_s(Overloaded("full", retry_after=2.0)) == 2.0
    assert a.wait_s(Overloaded("full", retry_after=60.0)) == 5.0
    clock.now += 16.0
    assert a.next_timeout() == pytest.approx(4.0)  # the attempt's timeout is cut to what is left
    with pytest.raises(Overloaded):
        a.wait_s(Overloaded("full", retry_after=5.0))  # would end past the deadline: raised now


def test_4xx_500_and_spent_attempts_are_raised():
    a, _ = attempts(max_attempts=2)
    a.next_timeout()
    for error in (errors.InvalidInput("bad"), errors.Unauthorized("key"), errors.Internal("internal"),
                  errors.RequestTimeout("slow body")):
        with pytest.raises(type(error)):
            a.wait_s(error)
    a.wait_s(errors.ConnectionFailed("reset"))
    a.next_timeout()
    with pytest.raises(errors.ConnectionFailed):
        a.wait_s(errors.ConnectionFailed("reset"))


def core(**kw) -> Core:
    return Core("http://x/", **{"api_key": None, "model": None, "version": None, "timeout_s": 1.0,
                                "retry": Retry(), "max_items_per_request": None, "format": "npy", **kw})


def _too_large(limit: dict | None, detail: str = "too large") -> errors.PayloadTooLarge:
    """As from_reply builds it from a 413 body carrying `limit`."""
    body = {"detail": detail, "type": "payload_too_large", **({"limit": limit} if limit else {})}
    return errors.from_reply(413, {}, json.dumps(body).encode())


def test_a_413_teaches_the_item_limit_or_a_byte_limit_from_its_data_never_its_prose():
    c = core()
    plan = c.encode(np.zeros((300, 784), np.uint8), None, None, None)()
    assert [call.items for call in plan.calls] == [300]
    assert c.learn_limit(_too_large({"name": "max_items_per_request", "value": 64, "got": 300}), plan)
    assert [call.items for call in c.encode(np.zeros((300, 784), np.uint8), None, None, None)().calls] == [
        64, 64, 64, 64, 44]
    big = Plan([Call("POST", "/encode", lambda r: r, items=64)], list)
    assert c.learn_limit(_too_large({"name": "max_body_bytes", "value": 1000, "got": 2000}), big)
    assert c.max_items == 30  # 64 * 1000 / 2000, with 5 % to spare
    assert not c.learn_limit(_too_large(None, "300 images exceed the limit of 64 per request"), big)  # prose only
    assert not c.learn_limit(_too_large({"name": "max_body_bytes", "value": 1000}), big)  # no size: nothing to scale
    assert not c.learn_limit(_too_large({"name": "max_items_per_request", "value": 64}), big)  # not smaller


def test_read_limits_takes_the_item_limit_from_the_models_listing():
    c = core()
    assert c.read_limits({"models": {}, "limits": {"max_items_per_request": 64, "max_body_bytes": 1 << 20}}) == 64
    assert c.read_limits({"models": {}}) == 64  # an older server without `limits`: kept


def test_the_clients_version_pins_only_its_own_model():
    pinned = core(model="vae", version=1)
    assert pinned._params(None, None) == {"model": "vae", "version": "1"}
    assert pinned._params(None, 2) == {"model": "vae", "version": "2"}
    assert pinned._params("ae", None) == {"model": "ae"}
    assert core(version=3)._params(None, None) == {"version": "3"}
    assert core()._params(None, None) == {}


def test_each_split_part_of_a_seeded_sample_gets_the_next_seed():
    c = core(max_items_per_request=4)
    bodies = [call.content for call in c.sample(10, 7, None, None, None, None)().calls]
    assert bodies == [b'{"n":4,"seed":7}', b'{"n":4,"seed":8}', b'{"n":2,"seed":9}']


@pytest.mark.parametrize("value, n", [
    (IMAGES_U8, 3), (IMAGES_U8.reshape(3, 784), 3), (IMAGES_U8[0], 1), (IMAGES_U8[0].reshape(784), 1),
    (IMAGES_U8.astype(np.float64) / 255, 3), ([IMAGES_U8[0], IMAGES_U8[1]], 2), ((IMAGES_U8[0] / 255).tolist(), 1),
    ((IMAGES_U8.reshape(3, 784) / 255).tolist(), 3),
])
def test_arrays_and_nested_lists_become_one_array(value, n):
    batch = inputs.image_batch(value)
    assert batch.array is not None and batch.array.shape == (n, 784) and batch.array.dtype in (np.uint8, np.float32)


def test_pngs_and_pil_images_decode_to_the_same_pixels(tmp_path):
    path = tmp_path / "d.png"
    path.write_bytes(png_bytes(IMAGES_U8[0]))
    batch = inputs.image_batch([path, str(path), png_bytes(IMAGES_U8[0]), Image.fromarray(IMAGES_U8[0])])
    assert batch.array.dtype == np.uint8
    assert (batch.array == IMAGES_U8[0].reshape(784)).all()
    mixed = inputs.image_batch([png_bytes(IMAGES_U8[0]), IMAGES_U8[0] / 255.0])
    assert mixed.array.dtype == np.float32  # uint8 PNG pixels scaled to [0, 1] to join a float image
    np.testing.assert_allclose(mixed.array[0], mixed.array[1], atol=1e-6)


@pytest.mark.parametrize("value, message", [
    (np.zeros((2, 783), np.float32), "got shape (2, 783)"),
    (np.zeros((2, 784), np.int64), "must be uint8"),
    (b"GIF89a....", "must be a PNG"),
    ([], "at least one image"),
    (Image.new("L", (27, 28)), "28x28"),
    (42, "cannot read images from a int"),
])
def test_unreadable_inputs_raise_invalid_input_before_sending(value, message):
    with pytest.raises(errors.InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        inputs.image_batch(value)
