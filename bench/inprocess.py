"""The in-process reference: encoder and decoder forward throughput with no HTTP, on the server's cores.

`python -m bench.inprocess --artifacts-dir artifacts` prints one JSON object. The driver runs it under the same
`taskset` and thread count as the server, so "same core" holds. On CUDA each pass includes the host->device copy of
its input and the device->host copy of its output, as a server must do; on the CPU those are no-ops.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.artifacts import latest_vae
from bench.bodies import mnist_test_images, npy_bytes
from service.device import flush_denormals

BATCHES = (1, 16, 1024)


def _rate(fn, batch: int, min_time_s: float) -> float:
    """Items per second of fn(), timed over repeated calls for at least min_time_s after a warm-up."""
    for _ in range(3):
        fn()
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_time_s or calls < 5:
        fn()
        calls += 1
    return calls * batch / elapsed


def measure(artifacts_dir: Path, device: str, min_time_s: float) -> dict:
    model, source = latest_vae(artifacts_dir)
    dev = torch.device(device)
    model = model.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    images, _ = mnist_test_images(max(BATCHES))
    x_all = torch.from_numpy(images.reshape(-1, 784).astype(np.float32) / 255)
    z_all = torch.randn(max(BATCHES), model.latent_dim)
    flush_denormals()  # as the service's compute thread does
    result = {"model": source, "device": str(dev), "threads": torch.get_num_threads(), "encode": {}, "decode": {}}
    with torch.inference_mode():
        for b in BATCHES:
            x, z = x_all[:b].contiguous(), z_all[:b].contiguous()

            def enc() -> None:
                loc, scale = model.encode(x.to(dev, non_blocking=True))
                loc.cpu(), scale.cpu()
                sync()

            def dec() -> None:
                model.decode(z.to(dev, non_blocking=True)).cpu()
                sync()

            result["encode"][str(b)] = _rate(enc, b, min_time_s)
            result["decode"][str(b)] = _rate(dec, b, min_time_s)
    body = npy_bytes(images)
    t0, n = time.perf_counter(), 50
    for _ in range(n):
        np.load(io.BytesIO(body), allow_pickle=False)
    result["npy_parse_1024_ms"] = (time.perf_counter() - t0) / n * 1e3
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--min-time-s", type=float, default=1.0, help="time per (operation, batch) figure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(json.dumps(measure(args.artifacts_dir, device, args.min_time_s)))


if __name__ == "__main__":
    main()
