"""The soak's hostile parts (bench/edges.py) that need no server: the hostile artifacts it drops in and takes out
again, and the 5xx count it reads from a /metrics scrape; and the mixed workload's paced control client."""

from __future__ import annotations

import http.server
import json
import threading
from typing import ClassVar

from bench.edges import HostileArtifacts, metrics_5xx
from bench.machine import CoreSplit
from bench.mixed import paced
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


class _Counting(http.server.BaseHTTPRequestHandler):
    """200 on /ok, 500 elsewhere; counts what it answered."""

    answered: ClassVar[list[str]] = []

    def do_GET(self):  # the stdlib's name
        self.answered.append(self.path)
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_mixed_workloads_control_client_keeps_its_rate_and_counts_failures():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = paced(url + "/ok", 40, 1.0, CoreSplit([], []))
        bad = paced(url + "/bad", 20, 0.5, CoreSplit([], []))
    finally:
        server.shutdown()
    # Open loop: requests leave on schedule (40 in the first second), not as fast as answers come back.
    assert _Counting.answered.count("/ok") == 40 and 30 <= ok.req_per_s <= 42 and ok.errors == 0
    assert bad.errors == _Counting.answered.count("/bad") == 10
