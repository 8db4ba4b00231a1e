"""`digit` through the client and the `latentserve` command against the live service: seeded draws of a digit, the
cvae serving them when no model is named, the split of a large call, and the server's 422 for a bad digit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from latentserve_client import Client, InvalidInput
from latentserve_client.cli import main

from tests.client.common import API_KEY, MAX_ITEMS

pytestmark = pytest.mark.slow


def test_sample_of_a_digit_is_seeded_and_goes_to_the_cvae(live):
    with Client(live.url, api_key=API_KEY) as client:
        sevens = client.sample(4, seed=3, digit=7)
        again = client.sample(4, 3, 7)
        pinned = client.sample(4, seed=3, digit=7, model="cvae")
        other = client.sample(4, seed=3, digit=1)
    assert sevens.shape == (4, 28, 28)
    np.testing.assert_array_equal(sevens, again)
    np.testing.assert_allclose(sevens, pinned, atol=1e-6)
    assert np.abs(sevens - other).max() > 1e-3


def test_a_split_digit_call_repeats(live):
    with Client(live.url, api_key=API_KEY) as client:
        first = client.sample(MAX_ITEMS + 5, seed=8, digit=2, model="ae")
        second = client.sample(MAX_ITEMS + 5, seed=8, digit=2, model="ae")
    assert first.shape == (MAX_ITEMS + 5, 28, 28)
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.parametrize("digit", [10, -1, "seven", "٣", True])
def test_a_bad_digit_raises_invalid_input(live, digit):
    with Client(live.url, api_key=API_KEY) as client, pytest.raises(InvalidInput, match="digit"):
        client.sample(2, digit=digit)


def test_the_command_line_draws_a_digit(live, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTSERVE_URL", live.url)
    monkeypatch.setenv("LATENTSERVE_API_KEY", API_KEY)
    for name in ("LATENTSERVE_MODEL", "LATENTSERVE_VERSION"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "sevens.npy"
    assert main(["sample", "-n", "3", "--seed", "1", "--digit", "7", "-o", str(out)]) == 0
    with Client(live.url, api_key=API_KEY) as client:
        np.testing.assert_allclose(np.load(out).reshape(3, 28, 28), client.sample(3, seed=1, digit=7), atol=1e-6)
    printed = json.loads(capsys.readouterr().out)
    assert printed["digit"] == 7
    assert main(["sample", "-n", "1", "--digit", "10"]) == 1
    assert "digit" in capsys.readouterr().err
