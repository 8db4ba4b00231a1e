"""The soak's hostile parts (bench/edges.py) that need no server: the hostile artifacts it drops in and takes out
again, and the 5xx count it reads from a /metrics scrape."""

from __future__ import annotations

import json

from bench.edges import HostileArtifacts, metrics_5xx
from tests import factories


def test_hostile_artifacts_alternate_an_odd_folder_and_a_huge_manifest_and_clean_up(tmp_path):
    factories.write(tmp_path, "vae", "vae")
    hostile = HostileArtifacts(tmp_path)
    before = sorted(p.name for p in (tmp_path / "vae").iterdir())
    assert hostile.step() == "added hostile vae/²" and (tmp_path / "vae" / "²" / "manifest.json").is_file()
    hostile.step()
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == before
    assert hostile.step() == "added hostile vae/900"
    assert json.loads((tmp_path / "vae" / "900" / "manifest.json").read_text())["latent_dim"] == 30000
    hostile.step()
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == before


def test_metrics_5xx_counts_only_server_errors_by_status():
    scrape = "\n".join([
        'latentserve_requests_total{endpoint="/encode",status="200"} 90.0',
        'latentserve_requests_total{endpoint="/encode",status="503"} 4.0',
        'latentserve_requests_total{endpoint="/decode",status="503"} 1.0',
        'latentserve_requests_total{endpoint="/encode",status="499"} 7.0',
        'latentserve_requests_total{endpoint="/encode",status="500"} 2.0',
        'latentserve_request_seconds_count{endpoint="/encode",status="500"} 2.0',
    ])
    assert metrics_5xx(scrape) == {"503": 5, "500": 2}
