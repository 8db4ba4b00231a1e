"""The benchmark's own logic, without a server: Prometheus parsing, the target checks, the BENCHMARKS.md refresh,
and the soak's table of malformed requests."""

import pytest

from bench.cases import malformed_cases, valid_cases
from bench.metrics import bucket_quantile, counts_by_label, histogram_buckets, histogram_totals
from bench.report import checks, write_section

METRICS = """# HELP latentserve_batch_size Items per forward pass
latentserve_batch_size_bucket{le="1.0",model="vae",operation="encode",version="1"} 2.0
latentserve_batch_size_bucket{le="+Inf",model="vae",operation="encode",version="1"} 5.0
latentserve_batch_size_sum{model="vae",operation="encode",version="1"} 40.0
latentserve_batch_size_count{model="vae",operation="encode",version="1"} 5.0
latentserve_batch_size_sum{model="ae",operation="decode",version="2"} 10.0
latentserve_batch_size_count{model="ae",operation="decode",version="2"} 5.0
latentserve_requests_total{endpoint="/encode",status="200"} 90.0
latentserve_requests_total{endpoint="/decode",status="200"} 7.0
latentserve_requests_total{endpoint="/encode",status="503"} 3.0
latentserve_request_seconds_bucket{endpoint="/encode",le="0.001",status="200"} 50.0
latentserve_request_seconds_bucket{endpoint="/encode",le="0.01",status="200"} 99.0
latentserve_request_seconds_bucket{endpoint="/encode",le="+Inf",status="200"} 100.0
"""


def test_histogram_totals_sum_every_label_set():
    assert histogram_totals(METRICS, "latentserve_batch_size") == (50.0, 10.0)


def test_counts_by_label_groups_statuses():
    assert counts_by_label(METRICS, "latentserve_requests_total", "status") == {"200": 97.0, "503": 3.0}


def test_bucket_quantile_picks_the_bucket_of_the_quantile():
    after = histogram_buckets(METRICS, "latentserve_request_seconds", {"status": "200"})
    assert bucket_quantile({}, after, 0.5) == 0.001
    assert bucket_quantile({}, after, 0.99) == 0.01
    assert bucket_quantile({}, after, 1.0) == float("inf")
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


@pytest.mark.parametrize("case", malformed_cases(2, 2**21, 1024), ids=lambda c: c.name)
def test_each_malformed_case_expects_a_4xx(case):
    assert 400 <= case.expect < 500
