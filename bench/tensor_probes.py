"""`python -m bench.tensor_probes`: what one hostile `/v2` tensor costs a live server (issue 17, items 1 and 2).

Each probe goes to a fresh uvicorn process (so that one left stuck cannot colour the next) serving one small VAE;
while it is in flight a second client polls `/healthz` back to back. Per probe: the status and time of its answer,
the longest `/healthz` round trip meanwhile (the stall every other request sees) and the growth of the server's peak
RSS (the kernel's VmHWM, reset just before the probe). Target: each probe answered 422 within a second, `/healthz`
never held more than a second, peak RSS within 100 MiB. Run it on older code in a scratch copy to see the before.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from bench import machine
from bench.bodies import hostile_shape, hostile_strings
from bench.report import REPO, checks_table, publish
from bench.server import Server
from lvm import MLPModel, write_artifact

WAIT_S = 30.0  # longest wait for a probe's answer; a server still stuck then is reported as such and killed
HEALTHZ_TARGET_S, ANSWER_TARGET_S, RSS_TARGET_MIB = 1.0, 1.0, 100.0
_BIG = 2**63 - 1


@dataclass(frozen=True)
class Probe:
    name: str
    body: bytes
    headers: dict[str, str]


def probes() -> list[Probe]:
    """The issue's probes, and a larger one of each kind (each under the default 16 MiB body limit)."""
    made = {
        "shape [2^63-1] x 50,000 (JSON)": hostile_shape(50_000, _BIG),
        "shape [2^63-1] x 50,000 (binary)": hostile_shape(50_000, _BIG, binary=True),
        "shape [2] x 20,000 (JSON)": hostile_shape(20_000, 2),
        "shape [2^63-1] x 800,000 (JSON)": hostile_shape(800_000, _BIG),
        "UINT8 [''] x 500,000 + ['x' x 1,000]": hostile_strings(500_000, 1_000),
        "UINT8 [''] x 1,000,000 + ['x' x 1,000,000]": hostile_strings(1_000_000, 1_000_000),
    }
    return [Probe(f"{name}, {len(body) / 2**20:.2f} MiB", body, headers) for name, (body, headers) in made.items()]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


async def _measure(url: str, pid: int, probe: Probe) -> dict:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    rss_kib = _status_kib(pid, "VmRSS")
    done = asyncio.Event()
    stall = {"max_s": 0.0, "polls": 0}

    async def poll(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                await asyncio.wait_for(client.get("/healthz"), WAIT_S + 5)
            except (httpx.HTTPError, TimeoutError):
                pass
            stall["max_s"] = max(stall["max_s"], time.perf_counter() - started)
            stall["polls"] += 1

    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as prober, \
            httpx.AsyncClient(base_url=url, timeout=WAIT_S + 5) as poller:
        await poller.get("/healthz")  # connected before the probe goes
        poller_task = asyncio.create_task(poll(poller))
        started = time.perf_counter()
        try:
            r = await prober.post("/v2/models/vae-encode/infer", content=probe.body, headers=probe.headers)
            status, detail = r.status_code, r.text[:100]
        except httpx.TimeoutException:
            status, detail = None, f"no answer within {WAIT_S:g} s"
        answer_s = time.perf_counter() - started
        done.set()
        try:  # the poll in flight ends when the server is free again; a server still stuck is not waited for
            await asyncio.wait_for(poller_task, 0.5 if status is None else WAIT_S)
        except TimeoutError:
            stall["max_s"] = max(stall["max_s"], time.perf_counter() - started)
    peak_mib = (_status_kib(pid, "VmHWM") - rss_kib) / 1024
    return {"probe": probe.name, "status": status, "detail": detail, "answer_s": answer_s,
            "healthz_max_s": stall["max_s"], "healthz_polls": stall["polls"], "rss_mib": rss_kib / 1024,
            "peak_rss_growth_mib": peak_mib}


def _artifacts(folder: Path) -> Path:
    torch.manual_seed(0)
    write_artifact(folder, "vae", MLPModel("vae", 2, [128, 128]), {
        "training": {"note": "random initialisation for the tensor probes"}, "data": {}, "metrics": {},
        "software": {}})
    return folder


def run(args) -> dict:
    cores = machine.split_cores(args.server_cores)
    scratch = Path(tempfile.mkdtemp(prefix="tensor-probes-"))
    rows = []
    try:
        env = {"LATENTSERVE_ARTIFACTS_DIR": str(_artifacts(scratch))}
        for probe in probes():
            server = Server("service.app:app", cores, env=env, log_path=args.out_dir / "server-tensor-probes.log")
            with server:
                row = asyncio.run(_measure(server.url, server.proc.pid, probe))
                server.stop(timeout_s=2.0)
            rows.append(row)
            print(f"[tensor-probes] {row['probe']}: {row['status']} in {row['answer_s']:.3f} s, /healthz up to "
                  f"{row['healthz_max_s']:.3f} s, peak RSS +{row['peak_rss_growth_mib']:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    checks = [{"target": f"{r['probe']}: 422 within {ANSWER_TARGET_S:g} s, /healthz <= {HEALTHZ_TARGET_S:g} s, "
                         f"peak RSS <= +{RSS_TARGET_MIB:g} MiB",
               "measured": f"{r['status'] or 'none'} in {r['answer_s']:.3f} s; /healthz max {r['healthz_max_s']:.3f} s; "
                           f"+{r['peak_rss_growth_mib']:.0f} MiB",
               "passed": r["status"] == 422 and r["answer_s"] <= ANSWER_TARGET_S
               and r["healthz_max_s"] <= HEALTHZ_TARGET_S and r["peak_rss_growth_mib"] <= RSS_TARGET_MIB}
              for r in rows]
    return {"machine": machine.describe(), "pinning": cores.describe(), "label": args.label, "rows": rows,
            "checks": checks, "passed": all(c["passed"] for c in checks)}


def markdown(result: dict) -> str:
    m = result["machine"]
    return "\n".join([
        f"## tensor probes ({result['label']}): {m['date']}",
        "",
        f"- {m['cpu']}, nproc {m['nproc']}, {m['memory_gib']} GiB, torch {m['torch']}; {result['pinning']}; load "
        f"average {machine.loadavg():.1f} at the end. One fresh server per probe, one 784-128-128-2 VAE; `/healthz` "
        "polled back to back while the probe is in flight.",
        "",
        checks_table(result["checks"], "probe"),
    ]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tensor_probes", description=__doc__)
    p.add_argument("--server-cores", type=int, help="cores pinned to the server (default: 1 of 2, else a quarter)")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "out")
    p.add_argument("--label", default="this code", help="what code the server runs, for the report's heading")
    p.add_argument("--benchmarks-md", type=Path, help="also refresh the 'tensor-probes' section of this file")
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = run(args)
    return publish(f"tensor-probes-{args.label.replace(' ', '-')}", result, markdown(result), args.out_dir,
                   args.benchmarks_md)


if __name__ == "__main__":
    sys.exit(main())
