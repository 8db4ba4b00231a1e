"""`python -m bench.hostile`: how fast, and at what memory cost, a reload refuses hostile versions (issue 9, fault 1).

Writes one small genuine VAE (784-128-128-2), then versions whose manifests ask for huge networks (latent_dim 30000,
hidden widths of a million, 8 layers of 4096 on the small weights), and reloads the service's registry over them.
Prints per version the reload's wall time, the growth of the process's peak RSS during it (the kernel's VmHWM, reset
before each reload) and the refusal reason. Target: each
refused in < 1 s with < 100 MB of extra memory. Unchecked, latent_dim 30000 alone allocated ~4 GB for ~12 s.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from lvm import MLPModel, write_artifact
from service.batcher import BatchConfig
from service.compute import Activity, ComputeThread
from service.device import Placement
from service.metrics import Metrics
from service.registry import Registry
from service.runtime import Runtime
from service.settings import Settings

HOSTILE = {
    "latent_dim 30000": lambda a: a.update(latent_dim=30000),
    "hidden [1000000, 128]": lambda a: a.update(hidden=[1_000_000, 128]),
    "hidden 8 x 4096": lambda a: a.update(hidden=[4096] * 8),
    "latent_dim 512, hidden [4096, 4096]": lambda a: a.update(latent_dim=512, hidden=[4096, 4096]),
}
_MANIFEST = {"training": {"note": "hostile-manifest benchmark"}, "data": {}, "metrics": {}, "software": {}}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> float:
    """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS and returns that RSS, in MB (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _plant(root: Path, edit) -> Path:
    """A fresh genuine version whose manifest is then edited (its checksums still pass: they cover the other files)."""
    torch.manual_seed(0)
    path = write_artifact(root, "vae", MLPModel("vae", 2, [128, 128]), _MANIFEST)
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest["architecture"])
    manifest["latent_dim"] = manifest["architecture"]["latent_dim"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


async def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    activity = Activity()
    compute = ComputeThread(activity)
    registry = Registry(root, "vae", Runtime(Placement(torch.device("cpu")), compute, activity,
                                             replace(BatchConfig.from_settings(Settings(artifacts_dir=root)), max_batch_size=8), Metrics()))
    failed = 0
    try:
        torch.manual_seed(0)
        write_artifact(root, "vae", MLPModel("vae", 2, [128, 128]), _MANIFEST)
        await registry.reload()  # the genuine version: every code path warm before anything is timed
        rss = _reset_peak_rss()
        torch.ones(50_000_000).sum()  # 200 MB, freed at once: shows that the meter sees a short-lived allocation
        print(f"meter check: a 200 MB tensor held for a moment reads as +{_status_mb('VmHWM') - rss:.0f} MB")
        print(f"{'manifest':40} {'reload s':>9} {'peak RSS +MB':>13}  reason")
        for label, edit in HOSTILE.items():
            path = _plant(root, edit)
            rss, started = _reset_peak_rss(), time.perf_counter()
            report = await registry.reload()
            elapsed, grown = time.perf_counter() - started, _status_mb("VmHWM") - rss
            reason = next((r["reason"] for r in report["refused"] if r["version"] == int(path.name)), "NOT REFUSED")
            ok = reason != "NOT REFUSED" and elapsed < 1.0 and grown < 100.0
            failed += not ok
            print(f"{label:40} {elapsed:9.4f} {grown:13.1f}  {reason.split(': ', 1)[-1]}"
                  + ("" if ok else "  <- FAILS the target"))
            shutil.rmtree(path)
        print(f"RSS now: {_status_mb('VmRSS'):.0f} MB; target < 1 s and < 100 MB each: "
              + ("met" if not failed else f"{failed} missed"))
    finally:
        await registry.close()
        compute.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
