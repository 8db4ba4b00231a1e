"""The documentation-only schemas (service/schemas.py) tied to the handlers that really parse bodies: every example
the OpenAPI document shows is served, and the bounds it states are the ones the handlers enforce."""

from __future__ import annotations

import pytest

from service import codecs, schemas

pytestmark = pytest.mark.anyio

EXAMPLES = [("/encode", schemas.EncodeRequest), ("/decode", schemas.DecodeRequest),
            ("/reconstruct", schemas.ReconstructRequest), ("/sample", schemas.SampleRequest)]


@pytest.mark.parametrize(("path", "model"), EXAMPLES, ids=[p for p, _ in EXAMPLES])
async def test_every_documented_example_is_served(client, path, model):
    examples = model.model_json_schema()["examples"]
    assert examples
    for example in examples:
        r = await client.post(path, json=example)
        assert r.status_code == 200, (path, example, r.text)


def _bounds(model, field: str) -> dict:
    prop = model.model_json_schema()["properties"][field]
    options = prop.get("anyOf", [prop])
    return next(o for o in options if o.get("type") == "integer")


@pytest.mark.parametrize("model", [schemas.SampleRequest, schemas.ReconstructRequest])
async def test_the_documented_seed_bounds_are_the_enforced_ones(client, model):
    bounds = _bounds(model, "seed")
    assert (bounds["minimum"], bounds["maximum"]) == (0, codecs.SEED_LIMIT - 1)
    for seed, status in ((bounds["minimum"], 200), (bounds["maximum"], 200), (bounds["minimum"] - 1, 422),
                         (bounds["maximum"] + 1, 422)):
        r = await client.post("/sample", json={"n": 1, "seed": seed})
        assert r.status_code == status, (seed, r.text)


async def test_the_documented_sample_count_bound_is_the_enforced_one(client):
    bounds = _bounds(schemas.SampleRequest, "n")
    assert bounds["minimum"] == codecs.MIN_ITEMS
    assert (await client.post("/sample", json={"n": bounds["minimum"]})).status_code == 200
    assert (await client.post("/sample", json={"n": bounds["minimum"] - 1})).status_code == 422
    limit = client.app.state.service.settings.max_items_per_request
    assert (await client.post("/sample", json={"n": limit})).status_code == 200
    assert (await client.post("/sample", json={"n": limit + 1})).status_code == 413
