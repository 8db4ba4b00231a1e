"""With an API key every endpoint but the probes and /metrics needs the bearer token."""

from __future__ import annotations

import pytest

from tests.serving import serve

pytestmark = pytest.mark.anyio
KEY = "s3cret-key"


@pytest.fixture
async def secured(artifacts_dir):
    async with serve(artifacts_dir, api_key=KEY) as c:
        yield c


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": KEY},
                                     {"authorization": f"Basic {KEY}"}])
@pytest.mark.parametrize("method, path", [("post", "/encode"), ("get", "/models"), ("post", "/admin/reload"),
                                          ("get", "/openapi.json"), ("get", "/nope")])
async def test_missing_or_wrong_key_gets_401(secured, headers, method, path):
    r = await getattr(secured, method)(path, headers=headers)
    assert r.status_code == 401
    assert r.json()["type"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


async def test_right_key_is_served_and_probes_are_open(secured):
    r = await secured.post("/encode", json={"images": [[0.0] * 784]}, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await secured.get(path)).status_code == 200
    assert 'latentserve_rejections_total{reason="unauthorized"}' not in (await secured.get("/metrics")).text
    await secured.get("/models")
    assert 'latentserve_rejections_total{reason="unauthorized"} 1.0' in (await secured.get("/metrics")).text


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR", "Bearer "])
async def test_the_scheme_name_is_case_insensitive(secured, scheme):
    r = await secured.post("/encode", json={"images": [[0.0] * 784]}, headers={"authorization": f"{scheme} {KEY}"})
    assert r.status_code == 200


@pytest.mark.parametrize("value", [f"bearer {KEY}x", f"bearer{KEY}", f"beare {KEY}", f"bearer {KEY.upper()}"])
async def test_the_key_itself_stays_exact(secured, value):
    assert (await secured.get("/models", headers={"authorization": value})).status_code == 401


# The probes (the service's and the protocol's) and /metrics stay open to the platform.
OPEN = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


async def test_openapi_declares_bearer_auth_on_every_guarded_route(secured):
    doc = (await secured.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "an API key (LATENTSERVE_API_KEY or one of LATENTSERVE_API_KEYS_FILE)"}
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            expected = None if path in OPEN else [{"bearer": []}]
            assert operation.get("security") == expected, path


async def test_without_a_key_openapi_declares_no_security(client):
    doc = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in doc.get("components", {})
