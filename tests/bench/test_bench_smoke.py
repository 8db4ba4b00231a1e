"""The benchmark and the soak in their CI modes, against a real uvicorn process: so the tooling never rots, and so
CI sees the service answer every scenario and every kind of request with the right status."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.wrk import wrk_path

REPO = Path(__file__).resolve().parents[2]
_P99_DRIFT = "p99 last window <= 1.5 x first"
pytestmark = pytest.mark.slow


@pytest.mark.skipif(wrk_path() is None, reason="wrk is not installed (apt-get install -y wrk); .ci/run installs it")
def test_bench_smoke_runs_clean(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out-dir", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = result["rows"]
    assert {r["scenario"] for r in rows} == {"floor-image", "encode-json", "encode-npy-1024"}
    for r in rows:
        assert r["errors"] == 0 and r["non2xx"] == 0, r
        assert r["requests"] > 0 and r["req_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["ratio"] is not None and r["ratio"] > 0
    service = [r for r in rows if r["batching"] == "on"]
    assert all(r["mean_batch"] is not None and r["mean_batch"] >= 1 for r in service)
    bulk = next(r for r in rows if r["scenario"] == "encode-npy-1024")
    assert bulk["images_per_s"] == pytest.approx(bulk["req_per_s"] * 1024)
    assert "(1024, 2)" in bulk["probe"] or "1024x2" in bulk["probe"]
    assert result["info"]["inprocess"]["encode"]["1024"] > 0
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    assert "| encode-json | on | 4 |" in run.stdout


def test_soak_smoke_passes(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench.soak", "--duration", "30", "--warmup", "3",
                          "--out-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    report = tmp_path / "soak.json"
    assert report.exists(), f"exit {run.returncode}, no soak.json\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    assert result["requests"] > 100 and result["malformed"] > 0
    assert result["p99_first_ms"] > 0 and result["p99_last_ms"] > 0
    # Every check must pass but the p99 drift, which a shared CI machine may fail; the exit status says the same.
    checks = {c["target"]: c for c in result["checks"]}
    assert "zero connection errors" in checks and "admin reloads answered 200" in checks, sorted(checks)
    failed = {t: checks[t]["measured"] for t in checks if not checks[t]["passed"]}
    failed.pop(_P99_DRIFT, None)
    assert not failed, (failed, result["unexpected"][:10], result["connection_errors"])
    assert run.returncode == (0 if checks[_P99_DRIFT]["passed"] else 1), run.stderr[-3000:]
