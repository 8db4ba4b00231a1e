"""Named keys with scopes, rate limits, the closed admin, CORS and the page's headers, in-process (the same behaviour
through real processes, rotation included, is in tests/e2e/test_access.py)."""

from __future__ import annotations

import logging

import httpx
import pytest

from service.auth import TokenBuckets
from service.browser import CSP
from service.keys import Key, KeyFileError, KeyRing, check_single_key, digest_of, parse_keys
from tests.serving import serve

pytestmark = pytest.mark.anyio
BILLING, OPS = "billing-secret-1", "ops-secret-2"
IMAGE = {"images": [[0.0] * 784]}


def keys_text(**secrets: str) -> str:
    scopes = {"billing": "infer", "ops": "infer,admin", "slow": "infer"}
    limits = {"slow": "rate=0.5 burst=2"}
    lines = ["# id  scopes  digest  limits"]
    for name, secret in secrets.items():
        lines.append(f"{name}  {scopes[name]}  sha256:{digest_of(secret).hex()}  {limits.get(name, '')}  # note")
    return "\n".join(lines) + "\n"


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
async def keyed(artifacts_dir, tmp_path):
    path = tmp_path / "keys"
    path.write_text(keys_text(billing=BILLING, ops=OPS, slow="slow-secret-3"))
    async with serve(artifacts_dir, api_keys_file=path, cors_origins="https://app.example, https://b.example") as c:
        yield c


def from_address(client: httpx.AsyncClient, host: str) -> httpx.AsyncClient:
    """The same app as seen from another peer address (the ASGI scope's `client`)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app, client=(host, 40000)),
                             base_url="http://test")


async def test_a_key_without_the_scope_gets_403_naming_it(keyed):
    r = await keyed.post("/admin/reload", json={}, headers=bearer(BILLING))
    assert r.status_code == 403
    assert {k: v for k, v in r.json().items() if k != "request_id"} == {
        "detail": "key 'billing' lacks the 'admin' scope this route needs", "type": "forbidden"}
    assert (await keyed.post("/admin/reload", json={}, headers=bearer(OPS))).status_code == 200
    assert (await keyed.post("/encode", json=IMAGE, headers=bearer(BILLING))).status_code == 200


@pytest.mark.parametrize("headers", [{}, bearer("nope"), bearer(digest_of(BILLING).hex()), {"authorization": BILLING}])
async def test_no_key_or_a_wrong_key_stays_401(keyed, headers):
    r = await keyed.get("/models", headers=headers)
    assert r.status_code == 401 and r.json()["type"] == "unauthorized"


async def test_whoami_names_the_key_and_its_scopes(keyed, client):
    assert (await keyed.get("/auth/whoami", headers=bearer(OPS))).json() == {"key": "ops", "scopes": ["infer", "admin"]}
    assert (await keyed.get("/auth/whoami", headers=bearer(BILLING))).json() == {"key": "billing", "scopes": ["infer"]}
    assert (await keyed.get("/auth/whoami")).status_code == 401
    # No key configured: anyone infers, admin only from this host.
    assert (await client.get("/auth/whoami")).json() == {"key": None, "scopes": ["infer", "admin"]}
    async with from_address(client, "10.1.2.3") as remote:
        assert (await remote.get("/auth/whoami")).json() == {"key": None, "scopes": ["infer"]}


async def test_the_single_key_has_both_scopes(artifacts_dir):
    async with serve(artifacts_dir, api_key="only-key") as c:
        assert (await c.get("/auth/whoami", headers=bearer("only-key"))).json() == {
            "key": "default", "scopes": ["infer", "admin"]}
        assert (await c.post("/admin/reload", json={}, headers=bearer("only-key"))).status_code == 200


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.168.0.7", "2001:db8::1"])
async def test_without_a_key_admin_answers_only_loopback(client, peer):
    assert (await client.post("/admin/reload", json={})).status_code == 200  # httpx's ASGI peer is 127.0.0.1
    async with from_address(client, peer) as remote:
        # A forwarded-for header claiming loopback is never read.
        r = await remote.post("/admin/reload", json={}, headers={"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1"})
        assert r.status_code == 403 and r.json()["type"] == "forbidden"
        assert "LATENTSERVE_ADMIN_OPEN" in r.json()["detail"]
        assert (await remote.post("/encode", json=IMAGE)).status_code == 200  # inference stays open


async def test_admin_open_opens_admin_to_every_peer(artifacts_dir):
    async with serve(artifacts_dir, admin_open=True) as c, from_address(c, "10.1.2.3") as remote:
        assert (await remote.post("/admin/reload", json={})).status_code == 200


async def test_a_rate_limited_key_gets_429_with_retry_after(keyed):
    codes = [(await keyed.get("/models", headers=bearer("slow-secret-3"))) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[2].json()["type"] == "rate_limited" and codes[2].headers["retry-after"] == "2"  # 1 token at 0.5/s
    assert (await keyed.get("/models", headers=bearer(BILLING))).status_code == 200  # other keys are not limited


def test_token_bucket_refills_at_its_rate_and_retry_after_is_whole_seconds():
    now = [0.0]
    buckets, key = TokenBuckets(clock=lambda: now[0]), Key("k", frozenset({"infer"}), bytes(32), 4.0, 2.0)
    assert [buckets.take(key) for _ in range(3)] == [0, 0, 1]  # burst 2, then 0.25 s to a token: at least 1 s
    now[0] = 0.25
    assert buckets.take(key) == 0
    slow = Key("s", frozenset({"infer"}), bytes(32), 0.1, 1.0)
    assert [buckets.take(slow), buckets.take(slow)] == [0, 10]


async def test_metrics_count_per_configured_key_and_never_show_a_secret(keyed):
    await keyed.get("/models", headers=bearer(BILLING))
    await keyed.post("/admin/reload", json={}, headers=bearer(BILLING))
    await keyed.get("/models", headers=bearer("unknown-secret"))
    text = (await keyed.get("/metrics")).text
    assert 'latentserve_key_requests_total{key="billing",status="200"} 1.0' in text
    assert 'latentserve_key_requests_total{key="billing",status="403"} 1.0' in text
    assert 'latentserve_key_requests_total{key="anonymous",status="401"} 1.0' in text
    assert 'latentserve_rejections_total{reason="forbidden"} 1.0' in text
    for secret in (BILLING, OPS, "unknown-secret", digest_of(BILLING).hex()):
        assert secret not in text


async def test_metrics_scope_closes_metrics_to_keys_without_it(artifacts_dir, tmp_path):
    path = tmp_path / "keys"
    path.write_text(keys_text(billing=BILLING, ops=OPS))
    async with serve(artifacts_dir, api_keys_file=path, metrics_scope="admin") as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer(BILLING))).status_code == 403
        assert (await c.get("/metrics", headers=bearer(OPS))).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_cors_preflight_is_answered_for_allowed_origins_only(keyed):
    ask = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
    r = await keyed.options("/encode", headers={"origin": "https://app.example", **ask})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert {"authorization", "content-type", "accept", "x-request-id"} <= {
        h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    r = await keyed.options("/encode", headers={"origin": "https://evil.example", **ask})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await keyed.post("/encode", json=IMAGE, headers={"origin": "https://b.example", **bearer(BILLING)})
    assert r.headers["access-control-allow-origin"] == "https://b.example"


async def test_without_cors_origins_no_cors_headers(client):
    r = await client.get("/models", headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("path", ["/", "/static/js/main.js", "/static/explorer.css", "/favicon.ico"])
async def test_the_page_and_static_files_carry_the_security_headers(client, path):
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP and "frame-ancestors 'none'" in CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]


async def test_static_files_revalidate_with_304(client):
    etag = (await client.get("/static/js/api.js")).headers["etag"]
    r = await client.get("/static/js/api.js", headers={"if-none-match": etag})
    assert r.status_code == 304 and not r.content


async def test_api_replies_carry_no_page_policy(client):
    assert "content-security-policy" not in (await client.get("/models")).headers


@pytest.mark.parametrize("value, reason", [("", "empty"), ("   ", "empty"), (" key", "whitespace"),
                                           ("key\t", "whitespace"), ("clé", "ASCII"), ("a\x00b", "ASCII")])
def test_unusable_single_keys_are_refused(value, reason):
    with pytest.raises(ValueError, match=reason):
        check_single_key(value)


@pytest.mark.parametrize("line, message", [
    ("billing infer", "line 2: expected 'id scopes"),
    ("billing infer,root sha256:" + "0" * 64, "line 2: unknown scope"),
    ("billing infer sha256:" + "0" * 63, "line 2: the third field must be sha256"),
    ("billing infer " + "0" * 64, "line 2: the third field"),
    ("bill/ing infer sha256:" + "0" * 64, "line 2: key id"),
    ("billing infer sha256:" + "0" * 64 + " rate=0", "line 2: expected rate=R"),
    ("billing infer sha256:" + "0" * 64 + " rate=fast", "line 2: expected rate=R"),
    ("billing infer sha256:" + "0" * 64 + " burst=3", "line 2: burst needs a rate"),
    ("other infer sha256:" + "1" * 64, "line 2: key id 'other' appears twice"),
])
def test_a_malformed_line_is_refused_with_its_number(line, message):
    with pytest.raises(KeyFileError, match=message):
        parse_keys("other infer sha256:" + "2" * 64 + "\n" + line)


def test_limits_default_the_burst_to_the_rate():
    (key,) = parse_keys("a infer,admin SHA256:" + "A" * 64 + " rate=20")
    assert (key.scopes, key.rate, key.burst, key.digest) == (frozenset({"infer", "admin"}), 20.0, 20.0, b"\xaa" * 32)


def test_a_changed_file_is_reread_after_the_check_period_and_a_bad_one_keeps_the_keys(tmp_path, caplog):
    now = [100.0]
    path = tmp_path / "keys"
    path.write_text(keys_text(billing=BILLING))
    ring = KeyRing(None, path, clock=lambda: now[0])
    path.write_text(keys_text(billing="rotated", ops=OPS))
    assert [k.id for k in ring.current()] == ["billing"]  # not due yet
    now[0] += 2.0
    assert {k.id: k.digest for k in ring.current()} == {"billing": digest_of("rotated"), "ops": digest_of(OPS)}
    path.write_text(keys_text(ops=OPS) + "broken line\n")
    now[0] += 2.0
    with caplog.at_level(logging.WARNING, "service.keys"):
        assert [k.id for k in ring.current()] == ["billing", "ops"]
    assert "line 3: expected 'id scopes" in caplog.text and "previous 2 keys stay in force" in caplog.text
    assert OPS not in caplog.text and "rotated" not in caplog.text
