"""`Client.score`, `AsyncClient.score` and `latentserve score` against the live service: the reply as a `Scores`,
splitting (by the item limit and by the work bound) that keeps every image's estimate, and the CLI's JSON."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from latentserve_client import AsyncClient, Client, InvalidInput, Scores
from latentserve_client.cli import main

from tests.client.common import API_KEY, MAX_ITEMS
from tests.helpers import IMAGES_U8, png_bytes

pytestmark = pytest.mark.slow
MANY = np.random.default_rng(5).integers(0, 256, (MAX_ITEMS + 6, 28, 28), dtype=np.uint8)


def test_score_returns_scores_and_a_split_call_keeps_each_images_estimate(live):
    with Client(live.url, api_key=API_KEY) as client:
        whole = client.score(MANY, samples=8, seed=3)
        alone = client.score(MANY[-2:], samples=8, seed=3)
        as_json = client.score(MANY[:2], samples=8, seed=3, format="json")
    assert isinstance(whole, Scores) and whole.samples == 8 and whole.model == "vae"
    assert whole.log_likelihood.shape == (len(MANY),) and whole.elbo.shape == (len(MANY),)
    # MANY is split in two requests at MAX_ITEMS: its last images' numbers are those they get alone.
    np.testing.assert_allclose(whole.log_likelihood[-2:], alone.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(whole.log_likelihood[:2], as_json.log_likelihood, rtol=1e-5)


def test_the_async_client_scores_too_and_bad_samples_is_invalid_input(live):
    async def go():
        async with AsyncClient(live.url, api_key=API_KEY, model="pca") as client:
            return await client.score(IMAGES_U8, seed=1)

    scores = asyncio.run(go())
    assert scores.model == "pca" and scores.elbo is None and np.isfinite(scores.log_likelihood).all()
    with Client(live.url, api_key=API_KEY) as client, pytest.raises(InvalidInput, match="5000"):
        client.score(IMAGES_U8, samples=5001)


def test_the_cli_prints_the_scores(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LATENTSERVE_URL", live.url)
    monkeypatch.setenv("LATENTSERVE_API_KEY", API_KEY)
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(IMAGES_U8[0]))
    assert main(["score", str(path), "--samples", "4", "--seed", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["model"], out["samples"]) == ("vae", 4) and len(out["log_likelihood"]) == 1
    assert main(["score", str(path), "--samples", "0"]) == 1
    assert "5000" in capsys.readouterr().err
