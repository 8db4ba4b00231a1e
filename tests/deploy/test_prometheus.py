"""deploy/prometheus and the autoscaling files: promtool checks the config and the rules and runs the alerts' unit
tests; every alert has one; the dashboard and KEDA read series that exist; and a real Prometheus scrapes a real
service (short intervals) until a recording rule answers and the shedding alert fires under induced overload."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from tests.deploy.common import ROOT
from tests.helpers import free_port

PROM = ROOT / "deploy" / "prometheus"
K8S = ROOT / "deploy" / "kubernetes"
PROMTOOL, PROMETHEUS = shutil.which("promtool"), shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def _rules(name: str) -> list[dict]:
    return [rule for group in yaml.safe_load((PROM / "rules" / name).read_text())["groups"] for rule in group["rules"]]


def _promtool(*args: str) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules():
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in _promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")


@needs_promtool
def test_the_alerts_pass_their_unit_tests():
    assert "SUCCESS" in _promtool("test", "rules", "tests/alerts.test.yml")


def test_every_alert_has_a_unit_test_and_a_dashboard_panel():
    tests = yaml.safe_load((PROM / "tests" / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    alerts = {rule["alert"]: rule["expr"] for rule in _rules("alerts.yml")}
    assert set(alerts) == tested
    exprs = " ".join(t["expr"] for p in json.loads((PROM / "grafana-dashboard.json").read_text())["panels"]
                     for t in p["targets"])
    for alert, expr in alerts.items():
        series = re.findall(r"latentserve[:_][a-z0-9_:]+", expr)
        assert series and all(s in exprs for s in series), (alert, series)


def test_the_series_read_are_the_ones_the_service_exports():
    from service.metrics import Metrics

    metrics = Metrics()
    metrics.artifacts_refused([("vae", 3)])
    metrics.batch_observer("vae", 1, "encode").depth(1)
    metrics.observe_request("/encode", 200, 0.01)
    exported = set(re.findall(r"^(latentserve_[a-z_]+)", metrics.render().decode(), re.M))
    recorded = {rule["record"] for rule in _rules("recording.yml")}
    texts = [rule["expr"] for rule in _rules("recording.yml") + _rules("alerts.yml")]
    texts.append(yaml.safe_load((K8S / "keda" / "scaledobject.yaml").read_text())["spec"]["triggers"][0]
                 ["metadata"]["query"])
    for text in texts:
        for name in re.findall(r"latentserve[:_][a-z0-9_:]+", text):
            assert name in exported or name in recorded, name


def test_keda_scales_the_deployment_on_requests_in_flight_and_keeps_cpu():
    scaled = yaml.safe_load((K8S / "keda" / "scaledobject.yaml").read_text())
    hpa = yaml.safe_load((K8S / "base" / "hpa.yaml").read_text())
    spec = scaled["spec"]
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())  # the overlays patch, never rename
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    prometheus, cpu = spec["triggers"]
    assert "latentserve_requests_in_flight" in prometheus["metadata"]["query"] and float(prometheus["metadata"]["threshold"]) > 0
    assert cpu["type"] == "cpu" and cpu["metadata"]["value"] == "70" and spec["fallback"]["replicas"] >= 2


def test_time_slicing_shares_each_gpu_between_replicas():
    config = yaml.safe_load((K8S / "gpu-time-slicing" / "time-slicing-config.yaml").read_text())
    (sharing,) = [yaml.safe_load(text)["sharing"]["timeSlicing"] for text in config["data"].values()]
    (resource,) = sharing["resources"]
    assert resource["name"] == "nvidia.com/gpu" and resource["replicas"] > 1


def _overload(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            try:
                client.post(f"{url}/encode", json={"images": [[0.5] * 784]})
            except httpx.TransportError:
                pass


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")
def test_a_real_prometheus_records_and_fires_under_overload(live_server, tmp_path):
    # One item of queue room: concurrent requests beyond it are shed with 503, the overload the alert is for.
    _, url = live_server(max_queue_items=1, max_batch_delay_ms=20)
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("recording.yml", "alerts.yml"):  # the shipped rules, with every `for` cut to 0 s
        (rules / name).write_text(re.sub(r"for: \S+", "for: 0s", (PROM / "rules" / name).read_text()))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(rules / "recording.yml"), str(rules / "alerts.yml")],
              "scrape_configs": [{"job_name": "latentserve", "static_configs": [{"targets": [url[len("http://"):]]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    load = [threading.Thread(target=_overload, args=(url, stop), daemon=True) for _ in range(16)]
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        for thread in load:
            thread.start()
        rate = firing = None
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not (rate and firing):
            time.sleep(0.5)
            try:
                rate = httpx.get(f"{api}/query", params={"query": "latentserve:requests:rate1m"}).json()["data"]["result"]
                alerts = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
            except (httpx.TransportError, KeyError, ValueError):
                continue  # Prometheus still starting
            firing = [a for a in alerts if a["labels"]["alertname"] == "LatentserveShedding" and a["state"] == "firing"]
        assert rate and float(rate[0]["value"][1]) > 0
        assert firing and float(firing[0]["value"]) > 0.05
    finally:
        stop.set()
        for thread in load:
            thread.join(15)
        prometheus.terminate()
        prometheus.wait(15)
