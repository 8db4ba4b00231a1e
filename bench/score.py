"""`/score` throughput against the same computation in process, on the same core (issue 18's target: >= 0.8 x).

- in process: the score operation's batch function (importance sampling, the model's terms, the outlier rule) over
  1,024 MNIST test images with `samples` draws each, in one pass and in passes of 8 (small batches like the ones the
  server's warm-up picks on a CPU, which beat one big pass), in a subprocess pinned like the server; the faster is
  the reference;
- served: `--clients` concurrent clients posting the same 1,024 images as a uint8 .npy body to
  `/score?samples=...`, against a pinned uvicorn process.

`python -m bench.score [--samples 100] [--seconds 20] [--benchmarks-md BENCHMARKS.md]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench import artifacts, bodies, machine
from bench.report import add_run_options, checks_table, publish
from bench.server import REPO, Server

IMAGES = 1024
TARGET = 0.8
PASS_SIZES = (IMAGES, 8)  # images per pass in process: all at once, and small batches like the server's


def inprocess(artifacts_dir: Path, model: str, samples: int, seconds: float) -> dict:
    """Images per second of the score batch function on one 1,024-image pass (run pinned, in a subprocess)."""
    import torch

    import lvm
    from service.device import Placement, flush_denormals
    from service.models import ServedModel, batch_fn
    from service.operations import SCORE, image_keys

    flush_denormals()
    versions = lvm.artifact.list_versions(artifacts_dir / model)
    served = ServedModel.load(lvm.load_artifact(artifacts_dir / model / str(versions[-1])),
                              Placement(torch.device("cpu")))
    images, _ = bodies.mnist_test_images(IMAGES)
    x = images.reshape(IMAGES, -1).astype(np.float32) / 255
    run = batch_fn(SCORE, served)

    def rows() -> np.ndarray:  # packing is part of the work: the served path packs on the event loop
        return np.concatenate([x, image_keys(x, 0), np.full((IMAGES, 1), samples, np.float32)], axis=1)

    run([rows()])  # warm-up
    rates = {}
    for size in PASS_SIZES:  # the reference is the faster: the server's own batches may beat one big pass
        passes, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / len(PASS_SIZES) or passes < 2:
            packed = rows()
            for first in range(0, IMAGES, size):
                run([packed[first:first + size]])
            passes += 1
        rates[size] = passes * IMAGES / elapsed
    best = max(rates, key=rates.get)
    return {"images_per_s": rates[best], "pass_images": best, "rates": rates, "threads": torch.get_num_threads(),
            "version": int(versions[-1])}


def served(url: str, body: bytes, samples: int, clients: int, seconds: float) -> dict:
    done, errors, lock, stop = [0], {}, threading.Lock(), time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop:
                r = http.post(f"/score?samples={samples}&seed={i}", content=body,
                              headers={"Content-Type": "application/x-npy"})
                with lock:
                    if r.status_code == 200:
                        done[0] += IMAGES
                    else:
                        key = f"{r.status_code} {r.text[:200]}"
                        errors[key] = errors.get(key, 0) + 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"images_per_s": done[0] / (time.monotonic() - start), "errors": sum(errors.values()),
            "error_replies": errors}


def measure(args) -> dict:
    cores = machine.split_cores(args.server_cores)
    root, described = artifacts.ensure(args.artifacts_dir, args.out_dir / "artifacts")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if cores.pinned:
        env["OMP_NUM_THREADS"] = str(len(cores.server))
    cmd = [*cores.taskset("server"), sys.executable, "-m", "bench.score", "--inprocess", "--artifacts-dir", str(root),
           "--samples", str(args.samples), "--seconds", str(args.seconds / 2)]
    reference = json.loads(subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True,
                                          text=True).stdout.splitlines()[-1])
    images, _ = bodies.mnist_test_images(IMAGES)
    if cores.pinned:
        os.sched_setaffinity(0, cores.load)
    server_env = {"LATENTSERVE_ARTIFACTS_DIR": str(root), "LATENTSERVE_LOG_LEVEL": "warning"}
    with Server("service.app:app", cores, server_env, log_path=args.out_dir / "score-server.log") as server:
        got = served(server.url, bodies.npy_bytes(images), args.samples, args.clients, args.seconds)
        listed = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()["models"]}
        got["batch_size"] = listed[args.model]["batch_sizes"]["score"]  # the default version's, which was served
    ratio = got["images_per_s"] / reference["images_per_s"]
    checks = [{"target": f"/score images/s >= {TARGET} x in process (samples={args.samples})",
               "measured": f"{ratio:.2f} x", "passed": ratio >= TARGET and not got["errors"]}]
    return {"machine": machine.describe(), "cores": cores.describe(), "artifacts": described,
            "samples": args.samples, "clients": args.clients, "inprocess": reference, "served": got,
            "ratio": ratio, "checks": checks, "passed": all(c["passed"] for c in checks)}


def markdown(result: dict) -> str:
    m, ref, got = result["machine"], result["inprocess"], result["served"]
    return "\n".join([
        "## /score throughput (`python -m bench.score`)", "",
        f"{m['date']} on {m['cpu']} ({m['nproc']} cores); {result['cores']}; {result['artifacts']}, vae/"
        f"{ref['version']}; 1,024 MNIST test images per request as uint8 .npy, samples={result['samples']}, "
        f"{result['clients']} clients.", "",
        "| path | images/s |", "|---|---:|",
        *(f"| in process (batch function, passes of {size} images, {ref['threads']} thread(s)) | {rate:.0f} |"
          for size, rate in ref["rates"].items()),
        f"| served over HTTP (batches of {got['batch_size']} images, chosen at warm-up) | {got['images_per_s']:.0f} "
        f"({got['errors']} errors) |", "",
        checks_table(result["checks"]), ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.score", description=__doc__)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--model", default="vae")
    p.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    add_run_options(p, "score")
    args = p.parse_args(argv)
    if args.inprocess:
        print(json.dumps(inprocess(args.artifacts_dir, args.model, args.samples, args.seconds)))
        return 0
    result = measure(args)
    return publish("score", result, markdown(result), args.out_dir, args.benchmarks_md)


if __name__ == "__main__":
    sys.exit(main())
