"""The Compose half of `make image-check`: docker-compose.yml with the CPU override, published on 127.0.0.1 only: up,
ready, one request, the `train` profile fitting a quick PPCA into the shared volume, `POST /admin/reload` serving it,
and `down --volumes`. Uses the images deploy/image_check.py built (the names docker-compose.yml gives them)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx

from deploy.engine import APP_PORT, ROOT, Engine, Report, free_port, sh, wait_ready

PROJECT = "latentserve-check"
MODEL = "pca"  # refitted by the `train` run: closed-form PPCA takes seconds on a CPU
TRAIN_COMMAND = ["fit", "--kind", "ppca", "--name", MODEL, "--latent-dim", "2", "--artifacts-dir", "/app/artifacts"]
# Replaces the published port with one on the loopback interface (`!override`: Compose >= 2.24, podman-compose >= 1.2).
_LOOPBACK = "services:\n  api:\n    ports: !override\n      - \"127.0.0.1:{port}:{app}\"\n"


def _versions(url: str) -> list[int]:
    reply = httpx.get(f"{url}/models/{MODEL}", timeout=10)
    return [m["version"] for m in reply.json()["versions"]] if reply.status_code == 200 else []


def run(engine: Engine, report: Report) -> None:
    mnist = Path(os.environ.get("MNIST_DIR", ROOT / "data" / "mnist")).resolve()
    if not report.check(mnist.is_dir(), "MNIST_DIR holds the MNIST files for the `train` profile", str(mnist)):
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        loopback = Path(tmp) / "compose.loopback.yml"
        loopback.write_text(_LOOPBACK.format(port=port, app=APP_PORT))
        files = [arg for path in (ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml", loopback)
                 for arg in ("-f", str(path))]
        compose = [*engine.compose(), "--project-name", PROJECT, *files]
        env = {k: v for k, v in os.environ.items() if k != "LATENTSERVE_API_KEY"} | {"MNIST_DIR": str(mnist)}
        try:
            _stack(compose, env, report, url)
        finally:
            down = sh([*compose, "--profile", "train", "down", "--volumes"], env=env, cwd=ROOT, check=False)
            volumes = engine("volume", "ls", "--format", "{{.Name}}").stdout.split()
            left = [v for v in volumes if v.startswith(PROJECT)]
            report.check(down.returncode == 0 and not left, "compose down --volumes leaves no container or volume",
                         f"{left} {down.stderr[-500:] if down.returncode else ''}".strip())


def _stack(compose: list[str], env: dict, report: Report, url: str) -> None:
    start = time.monotonic()
    sh([*compose, "up", "--detach", "api"], env=env, cwd=ROOT, timeout=300)
    ready = wait_ready(url, 180)
    if not report.check(ready is not None, "compose: the api service gets ready"):
        print(sh([*compose, "logs", "api"], env=env, cwd=ROOT, check=False).stdout[-2000:])
        return
    report.figure("compose up to ready", f"{time.monotonic() - start:.1f} s")
    reply = httpx.post(f"{url}/encode", json={"images": [[0.5] * 784]}, timeout=30)
    report.check(reply.status_code == 200, "compose: POST /encode 200", reply.text[:200])
    before = _versions(url)
    train_start = time.monotonic()
    fit = sh([*compose, "--profile", "train", "run", "--rm", "train", *TRAIN_COMMAND], env=env, cwd=ROOT,
             timeout=600, check=False)
    if not report.check(fit.returncode == 0, "compose: the train profile fits a PPCA into the shared volume",
                        (fit.stdout + fit.stderr)[-1500:]):
        return
    report.figure("compose train run (ppca, MNIST)", f"{time.monotonic() - train_start:.0f} s")
    reloaded = httpx.post(f"{url}/admin/reload", json={}, timeout=120)
    after = _versions(url)
    report.check(reloaded.status_code == 200 and len(after) == len(before) + 1 and max(after) > max(before, default=0),
                 "compose: POST /admin/reload serves the newly trained version", f"{before} -> {after}")
    served = httpx.post(f"{url}/encode", params={"model": MODEL}, json={"images": [[0.5] * 784]}, timeout=30)
    report.check(served.status_code == 200 and served.json().get("version") == max(after, default=None),
                 "compose: /encode?model=pca answers from the new version", served.text[:200])
