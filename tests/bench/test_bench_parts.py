"""The benchmark's own logic: Prometheus parsing, the target checks, the BENCHMARKS.md refresh, and the soak's
request table checked against the service in process."""

import httpx
import numpy as np
import pytest

from bench.cases import malformed_cases, valid_cases
from bench.metrics import (
    bucket_quantile,
    counts_by_label,
    histogram_buckets,
    histogram_totals,
)
from bench.report import checks, write_section
from bench.run import _geometric_ratio
from service.metrics import Metrics
from tests.serving import serve


def _metrics_text() -> str:
    """What the service's /metrics says after a few batches and requests (its own exposition, not a hand copy)."""
    metrics = Metrics()
    encode, decode = metrics.batch_observer("vae", 1, "encode"), metrics.batch_observer("ae", 2, "decode")
    for size in (1, 1, 12, 13, 13):
        encode.batch(size, 0.001)
    for _ in range(5):
        decode.batch(2, 0.001)
    for _ in range(50):
        metrics.observe_request("/encode", 200, 0.0008)
    for _ in range(49):
        metrics.observe_request("/encode", 200, 0.004)
    metrics.observe_request("/encode", 200, 0.3)
    for _ in range(3):
        metrics.observe_request("/encode", 503, 0.0001)
    for _ in range(7):
        metrics.observe_request("/decode", 200, 0.0001)
    return metrics.render().decode()


METRICS = _metrics_text()


def test_histogram_totals_sum_every_label_set():
    assert histogram_totals(METRICS, "latentserve_batch_size") == (50.0, 10.0)


def test_counts_by_label_groups_statuses():
    assert counts_by_label(METRICS, "latentserve_requests_total", "status") == {"200": 107.0, "503": 3.0}


def test_bucket_quantile_picks_the_bucket_of_the_quantile():
    after = histogram_buckets(METRICS, "latentserve_request_seconds", {"status": "200", "endpoint": "/encode"})
    assert bucket_quantile({}, after, 0.5) == 0.001
    assert bucket_quantile({}, after, 0.99) == 0.005
    assert bucket_quantile({}, after, 1.0) == 0.5
    assert bucket_quantile(after, after, 0.5) is None  # nothing observed between the scrapes


def _row(scenario, batching, c, rps, p50, p99, errors=0, ratio=None, ref_row=None, images=None):
    return {"scenario": scenario, "batching": batching, "concurrency": c, "req_per_s": rps, "p50_ms": p50,
            "p99_ms": p99, "errors": errors, "ratio": ratio, "ref_row": ref_row, "statuses": {},
            "images_per_s": images if images is not None else rps}


def test_checks_judge_each_target():
    floor1 = {"req_per_s": 4000, "p50_ms": 0.2, "p99_ms": 1.0}
    floor64 = {"req_per_s": 5000, "p50_ms": 10.0, "p99_ms": 15.0}
    rows = [
        _row("encode-json", "on", 1, 3000, 0.6, 2.0, ratio=0.75, ref_row=floor1),
        _row("encode-json", "on", 64, 3600, 12.0, 31.0, ratio=0.72, ref_row=floor64),
        _row("encode-json", "off", 1, 3050, 0.6, 2.0),
        _row("encode-json", "off", 64, 3700, 12.0, 30.0),
        _row("encode-npy-1024", "on", 64, 120, 500, 900, ratio=0.61, images=122880),
        _row("decode-npy-1024", "on", 64, 50, 500, 900, errors=3, ratio=0.4, images=51200),
    ]
    by_target = {c["target"]: c["passed"] for c in checks({"rows": rows})}
    assert by_target["encode-json c=64: req/s >= 0.70 x floor"] is True
    assert by_target["encode-json c=64: p99 <= 2 x floor p99"] is False  # 31 > 2 x 15
    assert by_target["encode-json c=1: p50 <= floor p50 + 0.5 ms"] is True
    assert by_target["encode-json c=64: batching on > off"] is False
    assert any(t.startswith("encode-json c=1: batching on >= off") and ok for t, ok in by_target.items())
    assert by_target["encode-npy-1024: images/s >= 0.60 x in-process (best c)"] is True
    assert by_target["decode-npy-1024: images/s >= 0.50 x in-process (best c)"] is False
    assert by_target["zero errors / non-2xx (floor and batching on)"] is False
    # Paired rounds, when the run has them, decide "on >= off" below the top concurrency.
    paired = {"1": {"on": [2900, 2950, 2800], "off": [3100, 3150, 3200], "ratio": 2900 / 3150}}
    judged = checks({"rows": rows, "info": {"paired": paired}})
    c1 = next(c for c in judged if c["target"].startswith("encode-json c=1: batching on >= off"))
    assert c1["passed"] is False and "median of 3 alternating rounds" in c1["measured"]


def test_the_access_log_ratio_weighs_both_orders_alike():
    # The second of a pair measures 4 % faster whichever it is; the JSON server costs 2 %.
    rounds = [{"text": 1000, "json": 980 * 1.04}, {"json": 980, "text": 1000 * 1.04}] * 3
    assert _geometric_ratio(rounds, "json", "text") == pytest.approx(0.98)
    assert _geometric_ratio([{"json": 0, "text": 1000}], "json", "text") is None
    access = {"concurrency": 64, "ratio": 0.94, "control": 1.01, "rounds": {"json": rounds, "control": rounds}}
    judged = {c["target"]: c for c in checks({"rows": [], "info": {"access_log": access}})}
    check = judged["encode-json c=64: req/s with JSON access lines >= 0.95 x without"]
    assert check["passed"] is False and "control, text against text: 1.010 x" in check["measured"]


def test_write_section_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nProse by a person.\n")
    write_section(md, "cpu", "first cpu\n")
    write_section(md, "cuda", "the gpu\n")
    write_section(md, "cpu", "second cpu\n")
    text = md.read_text()
    assert "Prose by a person." in text and "the gpu" in text and "second cpu" in text
    assert "first cpu" not in text and text.count("<!-- bench:begin cpu -->") == 1


def test_soak_cases_cover_every_rejection_status():
    bad = malformed_cases(latent_dim=2, max_body_bytes=2**21, max_items=1024)
    assert {c.expect for c in bad} == {401, 404, 405, 413, 415, 422}
    assert len({c.name for c in bad}) == len(bad)
    oversized = next(c for c in bad if c.name == "bad-body-too-large")
    assert len(oversized.body) > 2**21
    valid = valid_cases({"pca": 2, "ae": 2, "vae": 2})
    assert all(c.expect == 200 for c in valid)
    for endpoint in ("/encode", "/decode", "/reconstruct", "/sample", "/models"):
        for model in ("pca", "ae", "vae"):
            assert any(c.path.startswith(endpoint) and (model in c.path or endpoint == "/models") for c in valid)


_KEY = "soak-key"


def _send(client, case):
    headers = dict(case.headers) | ({"Authorization": f"Bearer {_KEY}"} if case.auth else {})
    return client.request(case.method, case.path, content=case.body, headers=headers)


@pytest.mark.anyio
async def test_the_soaks_cases_get_the_status_they_expect_from_the_service(artifacts_dir):
    """Every case the soak sends, against the service with the soak's settings: the `expect` column is checked
    against what the service answers, so a case that drifts from the API fails here rather than mid-soak."""
    async with serve(artifacts_dir, api_key=_KEY, max_body_bytes=2**21, max_items_per_request=1024,
                     max_batch_size=1024) as client:
        for case in malformed_cases(2, 2**21, 1024) + valid_cases({"pca": 2, "ae": 2, "vae": 2}):
            reply = await _send(client, case)
            assert reply.status_code == case.expect, (case.name, reply.text[:300])
            if not case.valid:  # the service's error body, or the protocol's on /v2
                assert reply.json().get("type") or reply.json().get("error"), case.name


def test_the_soak_tells_a_body_budget_503_in_either_error_body():
    # A /v2 probe shed by the budget answers the protocol's {"error"}: it was counted as an unexpected status.
    from bench.soak import _budget_shed

    detail = "too many request bodies being read at once (1 bytes, bound 2); retry"
    assert _budget_shed(httpx.Response(503, json={"detail": detail, "type": "overloaded"}, headers={"retry-after": "1"}))
    assert _budget_shed(httpx.Response(503, json={"error": detail}, headers={"retry-after": "1"}))
    assert not _budget_shed(httpx.Response(503, json={"error": "queue full"}, headers={"retry-after": "1"}))
    assert not _budget_shed(httpx.Response(503, json={"error": detail}))


def test_every_outlier_family_maps_test_digits_to_as_many_other_images_in_range():
    from bench.outliers import FAMILIES, HELD_OUT

    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.3, 0.4, (6, 784)), 0, 1)
    makers = {**{name: make for name, (_, _, make) in FAMILIES.items()}, **HELD_OUT}
    assert not set(FAMILIES) & set(HELD_OUT)
    for name, make in makers.items():
        out = np.clip(make(x, rng), 0, 1)
        assert out.shape == x.shape and np.isfinite(out).all(), name
        assert not np.allclose(out, x), name
