"""`make image-check`: builds the image with docker (podman where there is none), runs it on 127.0.0.1 and checks it
from outside: health and readiness, the four endpoints, the HEALTHCHECK, the non-root user, the committed artifacts
served with their checksums intact, what the image must not contain, and the SIGTERM drain. Then the Compose stack
(deploy/compose_check.py). Prints the figures (build time, size, time to ready, ...); exits 1 if any check failed.

    python -m deploy.image_check [--no-compose] [--build-flags '...']    # IMAGE_BUILD_FLAGS works too
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time

import httpx

from deploy import compose_check
from deploy.engine import APP_PORT, ROOT, Engine, Report, free_port, timed, wait_ready

IMAGE, TRAIN_IMAGE = "latentserve:latest", "latentserve-train:latest"  # the names docker-compose.yml builds
CONTAINER = "latentserve-image-check"
UID = 10001  # Dockerfile: USER 10001:10001
PIXELS = [0.5] * 784
REQUESTS = {"encode": {"images": [PIXELS]}, "decode": {"latents": [[0.0, 0.0]]},
            "reconstruct": {"images": [PIXELS]}, "sample": {"n": 4, "seed": 0}}
# What a serving image must not hold: (pattern on a path inside the image, why).
FORBIDDEN = [
    (r"(^|/)\.git(/|$)", "a git checkout"),
    (r"^/app/tests(/|$)|^/src(/|$)", "the repository's tests or the build folder"),
    (r"/site-packages/(_?pytest|hadolint|pyro|matplotlib|torchvision|kubernetes_validate|check_jsonschema|uv)(/|[-_.]|$)",
     "a dev or train tool"),
    (r"/bin/(pytest|hadolint|uv)$", "a dev tool"),
    (r"^/opt/venv/(bin/pip|lib/python3[.0-9]*/site-packages/pip(/|-))", "pip in the app's venv (installs nothing)"),
    (r"/site-packages/.*/tests/", "a wheel's test suite"),
    (r"(^|/)\.cache/pip(/|$)|^/root/\.cache(/|$)", "a pip cache"),
    # Debian's python3-venv keeps its pip/setuptools seed wheels in /usr/share/python-wheels: the base image's.
    (r"^(?!/usr/share/python-wheels/).*\.whl$", "a wheel file"),
]
# Runs inside the image: every file with its size, to find what is not allowed and what the bytes are made of.
_LIST_FILES = """
import os
for top, dirs, files in os.walk("/"):
    if top in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
        path = os.path.join(top, name)
        print(os.lstat(path).st_size, path)
"""
_HASH_ARTIFACTS = """
import hashlib, json, pathlib
root = pathlib.Path("/app/artifacts")
print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(root.rglob("*")) if p.is_file()}))
"""


def forbidden(paths: list[str]) -> dict[str, list[str]]:
    """Why -> the offending paths (at most five each), for paths inside an image."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for pattern, why in FORBIDDEN:
            if re.search(pattern, path):
                found.setdefault(why, [])
                if len(found[why]) < 5:
                    found[why].append(path)
    return found


def largest(files: list[tuple[int, str]], under: str, depth: int, top: int = 8) -> list[tuple[str, int]]:
    """The `top` largest folders `depth` levels below `under`, with their total bytes."""
    sizes: dict[str, int] = {}
    for size, path in files:
        if path.startswith(under + "/"):
            parts = path[len(under) + 1:].split("/")
            key = "/".join(parts[:depth]) if len(parts) > depth else "(files)"
            sizes[key] = sizes.get(key, 0) + size
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def repo_artifacts() -> dict[str, str]:
    root = ROOT / "artifacts"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def build(engine: Engine, report: Report, flags: list[str]) -> None:
    _, cold = timed(engine, "build", *flags, "-t", IMAGE, str(ROOT), timeout=1800)
    report.figure("build (first, runtime target)", f"{cold:.0f} s")
    _, cached = timed(engine, "build", *flags, "-t", IMAGE, str(ROOT), timeout=600)
    report.figure("build again (every layer cached)", f"{cached:.1f} s")
    _, train = timed(engine, "build", *flags, "--target", "train", "-t", TRAIN_IMAGE, str(ROOT), timeout=1800)
    report.figure("build train target (runtime layers cached)", f"{train:.0f} s")
    size = int(engine("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    report.figure("image size", f"{size / 1e9:.2f} GB")
    layers = engine("history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE).stdout.splitlines()
    print("  layers (size, step):\n" + "\n".join(f"    {line[:110]}" for line in layers if line.split("\t")[0]
                                                 not in ("0B", "0 B")))


def inspect_content(engine: Engine, report: Report) -> None:
    out = engine("run", "--rm", "--entrypoint", "python", IMAGE, "-c", _LIST_FILES, timeout=300).stdout
    files = [(int(size), path) for size, path in (line.split(" ", 1) for line in out.splitlines())]
    found = forbidden([path for _, path in files])
    report.check(not found, "the image holds no tests, caches, dev tools, pip or wheels", json.dumps(found))
    site = next(p.rsplit("/site-packages/", 1)[0] + "/site-packages" for _, p in files if "/site-packages/" in p)
    total = sum(size for size, _ in files)
    print(f"  files: {total / 1e9:.2f} GB in {len(files)} files; largest folders:")
    for under, depth in (("", 1), ("/opt/venv", 3), (site, 1), (site + "/nvidia", 1)):
        print(f"    {under or '/'}: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in largest(files, under, depth)))
    report.figure("bytecode (.pyc) in the image", f"{sum(s for s, p in files if p.endswith('.pyc')) / 1e6:.0f} MB")


def check_serving(engine: Engine, report: Report, url: str) -> None:
    report.check(httpx.get(f"{url}/healthz", timeout=5).status_code == 200, "GET /healthz 200")
    for n, (operation, body) in enumerate(REQUESTS.items()):
        start = time.monotonic()
        reply = httpx.post(f"{url}/{operation}", json=body, timeout=30)
        if n == 0:
            report.figure("first request (/encode) latency", f"{(time.monotonic() - start) * 1e3:.0f} ms")
        report.check(reply.status_code == 200 and "version" in reply.json(), f"POST /{operation} 200",
                     f"{reply.status_code} {reply.text[:200]}")
    report.check(engine.healthy(CONTAINER), "the image's HEALTHCHECK passes")
    user = engine("exec", CONTAINER, "python", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split()
    report.check(user == [str(UID), str(UID)], f"runs as uid/gid {UID}", " ".join(user))
    in_image = json.loads(engine("exec", CONTAINER, "python", "-c", _HASH_ARTIFACTS).stdout)
    in_repo = repo_artifacts()
    report.check(in_image == in_repo, "the image's artifacts are the committed files, byte for byte",
                 f"differ: {sorted(set(in_image.items()) ^ set(in_repo.items()))[:4]}")
    served = {}
    for model in httpx.get(f"{url}/models", timeout=10).json()["models"]:
        for manifest in httpx.get(f"{url}/models/{model['name']}", timeout=10).json()["versions"]:
            served |= {f"{manifest['name']}/{manifest['version']}/{f}": h for f, h in manifest["files"].items()}
    committed = {k: v for k, v in in_repo.items() if not k.endswith("manifest.json")}
    report.check(served == committed, "every committed artifact is served, its manifest's SHA-256 matching the repo's",
                 f"served {len(served)} files, committed {len(committed)}")


def check_drain(engine: Engine, report: Report, url: str) -> None:
    """SIGTERM while requests are in flight: each finishes (200) or is turned away cleanly (503), never a 500."""
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.post(f"{url}/sample", json={"n": 1024, "seed": 1}).status_code)
                except httpx.TransportError:
                    return  # the listening socket closed: the drain is under way
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    start = time.monotonic()
    engine("kill", "--signal", "TERM", CONTAINER)
    code = engine("wait", CONTAINER, timeout=60).stdout.strip().splitlines()[-1]
    drain = time.monotonic() - start
    stop.set()
    for thread in threads:
        thread.join(30)
    report.figure("SIGTERM to exit (4 clients in flight)", f"{drain:.2f} s")
    report.check(statuses.count(200) > 0 and set(statuses) <= {200, 503}, "requests in flight at SIGTERM end 200/503",
                 f"{len(statuses)} replies: {sorted(set(statuses))}")
    # uvicorn drains, then re-raises the SIGTERM it caught so that the process ends "killed by SIGTERM": 128 + 15.
    logs = engine("logs", CONTAINER).stdout + engine("logs", CONTAINER).stderr
    report.check(code == "143" and "Finished server process" in logs, "clean drain, exit 143 (128 + SIGTERM)",
                 f"exit {code}")


def run_image(engine: Engine, report: Report) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine("rm", "--force", CONTAINER, check=False)
    start = time.monotonic()
    engine("run", "--detach", "--name", CONTAINER, "--publish", f"127.0.0.1:{port}:{APP_PORT}",
           "--env", "LATENTSERVE_DEVICE=cpu", IMAGE)
    def running() -> bool:
        return engine("inspect", "--format", "{{.State.Running}}", CONTAINER).stdout.strip() == "true"

    ready = wait_ready(url, 180, running)
    if not report.check(ready is not None, "GET /readyz 200 after start",
                        engine("logs", CONTAINER, check=False).stderr[-2000:] if ready is None else ""):
        return
    report.figure("run to ready", f"{time.monotonic() - start:.1f} s")
    check_serving(engine, report, url)
    check_drain(engine, report, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-compose", action="store_true", help="skip the Compose stack")
    parser.add_argument("--build-flags", default=os.environ.get("IMAGE_BUILD_FLAGS", ""),
                        help="extra `build` flags for this machine (e.g. --network host)")
    args = parser.parse_args()
    engine, report = Engine.find(), Report()
    print(f"engine: {engine('--version').stdout.strip()}")
    try:
        print("build:")
        build(engine, report, engine.build_flags(args.build_flags))
        print("image content:")
        inspect_content(engine, report)
        print("run:")
        run_image(engine, report)
        if not args.no_compose:
            print("compose:")
            compose_check.run(engine, report)
    except Exception as exc:  # a step that could not run is a failed check; the summary still prints
        report.check(False, "the image check ran to the end", f"{type(exc).__name__}: {exc}")
    finally:
        engine("rm", "--force", CONTAINER, check=False)
    return report.summary()


if __name__ == "__main__":
    raise SystemExit(main())
