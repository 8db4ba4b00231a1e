"""Parsing and encoding of bodies: every accepted image format gives the same array, every bad one a clear 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service import codecs
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from tests.helpers import npy, png_b64

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (28, 28), dtype=np.uint8)


def test_every_image_format_gives_the_same_pixels():
    expected = (GRAY.astype(np.float32) / 255).reshape(1, 784)
    as_list = codecs.images_from_json(expected.tolist(), 8)
    as_rows = codecs.images_from_json([expected.reshape(28, 28).tolist()], 8)
    as_png = codecs.images_from_json([png_b64(GRAY)], 8)
    as_rgb = codecs.images_from_json([png_b64(np.stack([GRAY] * 3, axis=-1))], 8)
    as_uint8 = codecs.images_from_npy(npy(GRAY[None]), 8)
    as_float = codecs.images_from_npy(npy(expected), 8)
    for x in (as_list, as_rows, as_png, as_rgb, as_uint8, as_float):
        assert x.dtype == np.float32 and x.shape == (1, 784)
        np.testing.assert_allclose(x, expected, atol=1e-6)


def test_mixed_png_and_numbers_keep_their_order():
    x = codecs.images_from_json([[0.0] * 784, png_b64(np.full((28, 28), 255, np.uint8)), [[0.5] * 28] * 28], 8)
    np.testing.assert_allclose(x.mean(axis=1), [0.0, 1.0, 0.5])


@pytest.mark.parametrize(
    "images, message",
    [
        ([[0.5] * 783], "784 numbers"),
        ([0.5] * 784, "single image"),
        ([[1.5] * 784], "[0, 1]"),
        ([[-0.1] * 784], "[0, 1]"),
        ([[1e39] * 784], "non-finite"),
        ([[0.5] * 784, [0.5] * 700], "image 1 must be 784 numbers"),
        ([[[0.5] * 28] * 27 + [[0.5] * 27]], "rectangular"),
        ([["x"] * 784], "numbers"),
        ([[None] * 784], "numbers"),
        (["not base64!"], "base64"),
        ([base64.b64encode(b"GIF89a....").decode()], "PNG"),
        ([png_b64(np.zeros((32, 32), np.uint8))], "28x28"),
        ([], "at least one"),
        ("images", "list"),
    ],
)
def test_bad_images_are_refused_with_a_reason(images, message):
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        codecs.images_from_json(images, 8)


def test_too_many_items_is_413():
    with pytest.raises(PayloadTooLarge):
        codecs.images_from_json([[0.0] * 784] * 9, 8)
    with pytest.raises(PayloadTooLarge):
        codecs.images_from_npy(npy(np.zeros((9, 784), np.uint8)), 8)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not an npy file", "readable"),
        (npy(np.zeros((2, 784), np.int64)), "uint8"),
        (npy(np.zeros((2, 10), np.uint8)), "784"),
        (npy(np.full((1, 784), 2.0, np.float32)), r"\[0, 1\]"),
        (npy(np.array([[np.nan] * 784], np.float32)), "non-finite"),
        (npy(np.zeros(3, dtype=object)), "readable"),
    ],
)
def test_bad_npy_images_are_refused(body, message):
    with pytest.raises(InvalidInput, match=message):
        codecs.images_from_npy(body, 8)


def test_latents_are_checked_against_the_latent_dimension():
    z = codecs.latents_from_json([[0.1, 0.2]], 2, 8)
    assert z.shape == (1, 2) and z.dtype == np.float32
    np.testing.assert_array_equal(codecs.latents_from_npy(npy(np.ones((3, 2), np.float32)), 2, 8), np.ones((3, 2)))
    with pytest.raises(InvalidInput, match="2 numbers"):
        codecs.latents_from_json([[0.1, 0.2, 0.3]], 2, 8)
    with pytest.raises(InvalidInput, match="non-finite"):
        codecs.latents_from_json([[1e39, 0.0]], 2, 8)
    with pytest.raises(InvalidInput, match="float32"):
        codecs.latents_from_npy(npy(np.ones((3, 2), np.int32)), 2, 8)


def test_content_and_accept_types():
    assert codecs.body_format(None) == "json"
    assert codecs.body_format("application/json; charset=utf-8") == "json"
    assert codecs.body_format("application/x-npy") == "npy"
    with pytest.raises(UnsupportedMediaType):
        codecs.body_format("text/plain")
    assert codecs.reply_format(None) == "json"
    assert codecs.reply_format("image/png") == "png"
    assert codecs.reply_format("application/x-npy, */*;q=0.1") == "npy"
    assert codecs.reply_format("text/html, application/json") == "json"


@pytest.mark.parametrize("accept, expected", [
    ("application/x-npy;q=0, application/json", "json"),  # q=0: not acceptable at all
    ("application/x-npy;q=0", "json"),
    ("image/png;q=0.5, application/x-npy;q=0.9", "npy"),
    ("image/*, application/json;q=0.1", "png"),
    ("application/*", "json"),  # a wildcard or a tie goes to JSON
    ("*/*;q=0.8, image/png", "png"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),  # a browser's
    ("image/png, application/json", "json"),
    ("APPLICATION/X-NPY", "npy"),
    ("not a media type;;q=x", "json"),  # unparsable: the default rather than an error
])
def test_accept_honours_q_values_and_wildcards(accept, expected):
    assert codecs.reply_format(accept) == expected


def test_png_grid_and_npy_round_trip():
    images = RNG.random((5, 784), dtype=np.float32)
    grid = Image.open(io.BytesIO(codecs.png_grid(images)))
    assert grid.size == (3 * 28, 2 * 28) and grid.mode == "L"
    tile = np.asarray(grid)[28:56, 28:56]  # the fifth image: second row, second column
    np.testing.assert_allclose(tile / 255, images[4].reshape(28, 28), atol=1 / 255)
    np.testing.assert_array_equal(np.load(io.BytesIO(codecs.npy_bytes(images))), images)


def test_flat_and_28x28_images_mix_without_a_png():
    flat, rows = [0.25] * 784, [[0.75] * 28] * 28
    x = codecs.images_from_json([flat, rows, flat], 8)
    np.testing.assert_allclose(x.mean(axis=1), [0.25, 0.75, 0.25])
    with pytest.raises(InvalidInput, match="image 1 must be 784 numbers"):
        codecs.images_from_json([flat, [0.5] * 783], 8)


LEVELS = np.tile(np.linspace(0, 1, 28), (28, 1))  # a horizontal ramp from black to white


@pytest.mark.parametrize(("make", "atol"), [
    (lambda: Image.fromarray(np.rint(LEVELS * 65535).astype(np.uint16)), 1e-5),  # 16-bit grey
    (lambda: Image.fromarray(np.rint(LEVELS * 255).astype(np.uint8)), 0.5 / 255),  # 8-bit grey
    (lambda: Image.fromarray(LEVELS > 0.5), 0.5),  # 1-bit: black below the middle, white above
    (lambda: Image.fromarray(np.rint(LEVELS * 255).astype(np.uint8)).convert("P"), 0.5 / 255),
    (lambda: Image.fromarray(np.rint(LEVELS * 255).astype(np.uint8)).convert("RGB"), 0.5 / 255),
    (lambda: Image.fromarray(np.rint(LEVELS * 255).astype(np.uint8)).convert("RGBA"), 0.5 / 255),
], ids=["16-bit grey", "8-bit grey", "1-bit", "palette", "RGB", "RGBA"])
def test_png_pixels_are_scaled_by_bit_depth(make, atol):
    buf = io.BytesIO()
    make().save(buf, format="PNG")
    x = codecs.decode_png(base64.b64encode(buf.getvalue()).decode()).reshape(28, 28)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x, LEVELS, atol=atol)


def test_half_grey_16_bit_png_is_half_grey_not_white():
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 32768, np.uint16)).save(buf, format="PNG")
    assert abs(float(codecs.decode_png(base64.b64encode(buf.getvalue()).decode()).mean()) - 0.5) < 1e-4


@pytest.mark.parametrize("value", [1.0000001, -1e-7, 1.5, 255.0])
def test_range_error_shows_the_offending_value_exactly(value):
    x = np.full((1, 784), 0.5, np.float32)
    x[0, 3] = value
    with pytest.raises(InvalidInput) as info:
        codecs.check_pixels(x)
    shown = str(info.value).split("got values in [")[1].split("]")[0].split(", ")
    assert np.float32(float(shown[0 if value < 0 else 1])) == np.float32(value)


@pytest.mark.parametrize("text", ["²", "١", "-1", "1.0", "", "9" * 20, "9223372036854775808"])
def test_query_seeds_are_ascii_digits_below_the_limit(text):
    with pytest.raises(InvalidInput):
        codecs.query_seed(text)


def test_seed_parsers_agree_on_the_limit():
    assert codecs.query_seed(str(codecs.SEED_LIMIT - 1)) == codecs.seed(codecs.SEED_LIMIT - 1)
    assert codecs.query_seed("0") == 0 and 0 <= codecs.query_seed(None) < codecs.SEED_LIMIT
    for bad in (codecs.SEED_LIMIT, -1, True, 1.0, "1"):
        with pytest.raises(InvalidInput):
            codecs.seed(bad)
    assert codecs.flag("TRUE", "sample") and not codecs.flag(None, "sample")
    with pytest.raises(InvalidInput, match="sample must be true or false"):
        codecs.flag("maybe", "sample")
