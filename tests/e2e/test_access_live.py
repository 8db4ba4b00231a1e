"""Access control through real `python -m service` processes: rotation by editing the keys file (no restart), scopes,
rate limits honoured through the client package, CORS, the page's headers, loopback-only admin, and no secret in the
log, the metrics or any error."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
from latentserve_client import Client, Retry

from service.browser import CSP
from service.keys import RELOAD_CHECK_S, digest_of
from tests.helpers import ROOT

BILLING, OPS, NEW_OPS = "ls_billing-first", "ls_ops-first", "ls_ops-rotated"


def line(name: str, scopes: str, secret: str, limits: str = "") -> str:
    return f"{name}  {scopes}  sha256:{digest_of(secret).hex()}  {limits}\n"


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def wait_for(check, timeout_s: float) -> float:
    """Polls `check()` until true; returns the seconds it took, or fails after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s")


def test_keys_file_scopes_limits_rotation_cors_and_no_secret_leaks(live_server, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# id scopes digest limits\n" + line("billing", "infer", BILLING, "rate=1 burst=1")
                    + line("ops", "infer,admin", OPS))
    proc, url = live_server(api_keys_file=keys, cors_origins="https://app.example")
    with httpx.Client(base_url=url, timeout=10) as http:
        # Scopes: billing infers but gets 403 on admin, naming the scope; ops reloads.
        forbidden = http.post("/admin/reload", json={}, headers=bearer(BILLING))
        assert forbidden.status_code == 403 and "'admin' scope" in forbidden.json()["detail"]
        assert http.post("/admin/reload", json={}, headers=bearer(OPS)).status_code == 200

        # Rate: billing's bucket holds 1 token, refilled at 1/s; the second request at once gets 429 with a
        # whole-second Retry-After, and the client package, honouring it, gets its answer.
        assert http.get("/models", headers=bearer(BILLING)).status_code == 200
        limited = http.get("/models", headers=bearer(BILLING))
        assert limited.status_code == 429 and limited.json()["type"] == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        with Client(url, api_key=BILLING, retry=Retry(max_attempts=3, deadline_s=10)) as client:
            assert client.encode(np.zeros((1, 784), np.float32)).model == "vae"

        # CORS: the allowed origin's preflight is answered, another's is not.
        ask = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
        allowed = http.options("/encode", headers={"origin": "https://app.example", **ask})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = http.options("/encode", headers={"origin": "https://evil.example", **ask})
        assert "access-control-allow-origin" not in refused.headers

        # The page's headers.
        page = http.get("/")
        assert page.headers["content-security-policy"] == CSP and page.headers["x-content-type-options"] == "nosniff"

        # Rotation: ops gets a new secret by editing the file; within the check period the new secret works and
        # the old one gets 401, with the same process.
        keys.write_text(line("billing", "infer", BILLING) + line("ops", "infer,admin", NEW_OPS))
        took = wait_for(lambda: http.get("/auth/whoami", headers=bearer(NEW_OPS)).status_code == 200,
                        RELOAD_CHECK_S + 3)
        assert took <= RELOAD_CHECK_S + 1
        assert http.get("/auth/whoami", headers=bearer(OPS)).status_code == 401
        assert http.get("/auth/whoami", headers=bearer(NEW_OPS)).json() == {"key": "ops", "scopes": ["infer", "admin"]}

        # A broken file keeps the keys in force, and says why (with the line number) in the log.
        keys.write_text(line("ops", "infer,admin", NEW_OPS) + "billing infer sha256:short\n")
        log = tmp_path / "server-0.log"
        wait_for(lambda: http.get("/models", headers=bearer(BILLING)).status_code == 200
                 and "line 2: the third field" in log.read_text(), RELOAD_CHECK_S + 3)
        assert proc.poll() is None

        metrics = http.get("/metrics").text
        errors = [forbidden.text, limited.text, http.get("/models", headers=bearer("wrong")).text]
    assert 'latentserve_key_requests_total{key="billing",status="429"}' in metrics
    for text in (log.read_text(), metrics, *errors):
        for secret in (BILLING, OPS, NEW_OPS):
            assert secret not in text


def test_without_a_key_admin_answers_loopback_and_says_so_once(live_server, tmp_path):
    _, url = live_server()
    r = httpx.post(url + "/admin/reload", json={}, headers={"x-forwarded-for": "203.0.113.9"}, timeout=10)
    assert r.status_code == 200  # the peer is 127.0.0.1; the forwarded-for header is not read
    assert (tmp_path / "server-0.log").read_text().count("/admin/* answers only loopback clients") == 1


def test_an_empty_api_key_refuses_to_start_with_one_line():
    # The other refusals (whitespace, non-ASCII) take the same path: tests/api/test_access.py checks each reason.
    env = {"LATENTSERVE_API_KEY": "", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("latentserve: LATENTSERVE_API_KEY")
    assert "set but empty" in done.stderr


def test_keys_add_prints_the_secret_once_and_appends_its_digest(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# operators' keys\nops infer,admin sha256:" + "0" * 64)  # no final newline
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "service", "keys", "add", "billing", "--scopes", "infer",
                           "--rate", "20", "--file", str(keys)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    lines = keys.read_text().splitlines()
    assert lines[2].split() == ["billing", "infer", f"sha256:{digest_of(secret).hex()}", "rate=20"]
    assert secret not in keys.read_text() and secret not in done.stderr
    again = subprocess.run([sys.executable, "-m", "service", "keys", "add", "billing", "--scopes", "infer", "--file",
                            str(keys)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "appears twice" in again.stderr and len(keys.read_text().splitlines()) == 3
