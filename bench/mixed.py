"""The mixed-workload and bulk-memory figures of issue 9, each against its own pinned uvicorn process.

- mixed: 16 wrk connections send 1,024-image uint8 .npy bodies to /encode, alone, then with one more connection
  sending single-image JSON /encode, then (the control) with GET /healthz paced at the rate the single-image client
  just reached, in alternating rounds (drift on a shared machine hits all three alike). Targets: the single image's
  p50 < 50 ms under bulk, bulk images/s with it >= 0.9 x without it. The control touches no queue and no model: what
  it costs the bulk clients is what any request at that rate costs the server's cores, whatever the batching order.
- bulk memory: 96 concurrent ~15 MiB JSON /encode bodies (1,024 images each) at once, server RSS sampled every
  50 ms. Targets: RSS grows by < 1 GiB, every answer 200 or 503; RSS a few seconds after the burst is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench import artifacts, bodies, machine
from bench.report import add_run_options, checks_table, publish
from bench.scenarios import JSON, NPY
from bench.server import CLIENT_KEEPALIVE_EXPIRY_S, REPO, Server
from bench.wrk import Load, run_wrk

BULK_CLIENTS = 16
BURST = 96


@dataclass
class Paced:
    """What an open-loop client measured: answers per second, median latency, and failures (non-2xx or errors)."""

    req_per_s: float
    p50_ms: float
    errors: int


def paced(url: str, rate: float, seconds: float, cores) -> Paced:
    """GET `url` at `rate` requests/s for `seconds` on one keep-alive connection, on the load generator's cores: each
    request leaves at its scheduled time, or at once when the last answer came later than that."""
    if cores.pinned:
        os.sched_setaffinity(0, cores.load)  # this thread only
    latencies, errors = [], 0
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        sent = 0
        while sent / rate < seconds:  # the request due at start + sent / rate
            wait = start + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            t0 = time.monotonic()
            try:
                errors += not client.get(url).is_success
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.monotonic() - t0)
            sent += 1
        elapsed = time.monotonic() - start
    return Paced(len(latencies) / elapsed, 1000 * statistics.median(latencies) if latencies else 0.0, errors)


def _beside(task) -> tuple[threading.Thread, dict]:
    """Runs task() in a thread started now; its result lands in the dict under "result"."""
    side: dict = {}
    thread = threading.Thread(target=lambda: side.update(result=task()))
    thread.start()
    return thread, side


def mixed(served: Path, cores, files: dict[str, Path], rounds: int, round_s: float, env: dict, log) -> dict:
    """Medians over `rounds` alternating rounds of bulk alone, bulk + one single-image client, and bulk + the control
    (GET /healthz paced at the single-image client's rate in the same round)."""
    alone, together, single, control, probes = [], [], [], [], []
    with Server("service.app:app", cores, env={"LATENTSERVE_ARTIFACTS_DIR": str(served), **env}) as server:
        url = server.url + "/encode"
        bulk_load = Load(url, files["images1024_npy"], BULK_CLIENTS, round_s, content_type=NPY)
        single_load = Load(url, files["image_json"], 1, round_s, content_type=JSON)
        run_wrk(replace(bulk_load, duration_s=2), cores)  # warm-up, not kept
        for r in range(rounds):
            bulk = run_wrk(bulk_load, cores)
            alone.append(bulk.req_per_s * bodies.N_BULK)
            thread, side = _beside(lambda: run_wrk(single_load, cores))
            bulk = run_wrk(bulk_load, cores)
            thread.join()
            together.append(bulk.req_per_s * bodies.N_BULK)
            single.append(side["result"])
            rate = max(single[-1].req_per_s, 1.0)
            thread, side = _beside(lambda rate=rate: paced(server.url + "/healthz", rate, round_s, cores))
            bulk = run_wrk(bulk_load, cores)
            thread.join()
            control.append(bulk.req_per_s * bodies.N_BULK)
            probes.append(side["result"])
            log(f"[mixed] round {r + 1}: bulk alone {alone[-1]:,.0f} images/s, with a single-image client "
                f"{together[-1]:,.0f} images/s; single image p50 {single[-1].p50_ms:.1f} ms p99 "
                f"{single[-1].p99_ms:.1f} ms ({single[-1].req_per_s:.0f} req/s); with GET /healthz at "
                f"{probes[-1].req_per_s:.0f} req/s {control[-1]:,.0f} images/s")
    return {"rounds": rounds, "round_s": round_s, "bulk_alone_images_per_s": statistics.median(alone),
            "bulk_mixed_images_per_s": statistics.median(together),
            "bulk_control_images_per_s": statistics.median(control),
            "single_p50_ms": statistics.median(s.p50_ms for s in single),
            "single_p99_ms": statistics.median(s.p99_ms for s in single),
            "single_req_per_s": statistics.median(s.req_per_s for s in single),
            "single_errors": sum(s.errors for s in single),
            "control_req_per_s": statistics.median(p.req_per_s for p in probes),
            "control_errors": sum(p.errors for p in probes),
            "per_round": {"alone": alone, "mixed": together, "control": control,
                          "single_p50_ms": [s.p50_ms for s in single]}}


def burst(served: Path, cores, body: bytes, env: dict, log, label: str) -> dict:
    """96 concurrent max-size JSON bodies; RSS before, peak during, and 5 s after."""
    with Server("service.app:app", cores, env={"LATENTSERVE_ARTIFACTS_DIR": str(served), **env}) as server:
        httpx.post(server.url + "/encode", content=body, headers={"content-type": JSON}, timeout=60)  # warm
        time.sleep(1)
        rss0, peak, stop = server.rss_bytes(), [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], server.rss_bytes())
                time.sleep(0.05)

        async def send_all() -> Counter:
            limits = httpx.Limits(max_connections=BURST, keepalive_expiry=CLIENT_KEEPALIVE_EXPIRY_S)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
                async def one() -> int | str:
                    try:
                        return (await client.post("/encode", content=body, headers={"content-type": JSON}))\
                            .status_code
                    except httpx.HTTPError as exc:
                        return type(exc).__name__
                return Counter(await asyncio.gather(*(one() for _ in range(BURST))))

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.monotonic()
        statuses = asyncio.run(send_all())
        wall = time.monotonic() - t0
        time.sleep(5)
        stop.set()
        sampler.join()
        rss_after = server.rss_bytes()
    mib = 2**20
    result = {"label": label, "env": env, "statuses": {str(k): v for k, v in statuses.items()}, "wall_s": wall,
              "rss_before_mib": rss0 / mib, "rss_peak_mib": peak[0] / mib, "rss_after_5s_mib": rss_after / mib,
              "growth_mib": (peak[0] - rss0) / mib}
    log(f"[burst {label}] {dict(statuses)} in {wall:.1f} s; RSS {rss0 / mib:.0f} -> peak {peak[0] / mib:.0f} -> "
        f"{rss_after / mib:.0f} MiB 5 s later")
    return result


def measure(args) -> dict:
    cores = machine.split_cores(args.server_cores)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    served, desc = artifacts.ensure(args.artifacts_dir, out / "artifacts")
    files = bodies.prepare(out / "bodies")
    body = files["images1024_json_max"].read_bytes()
    info = {"machine": machine.describe(), "pinning": cores.describe(), "artifacts": desc.replace(f"{REPO}/", ""),
            "loadavg_start": machine.loadavg(), "json_body_mib": len(body) / 2**20}
    result = {**info, "mixed": mixed(served, cores, files, args.rounds, args.round_s, {}, print)
              if args.rounds else None}
    result["burst"] = [burst(served, cores, body, {}, print, "default budget")]
    if args.compare:
        # The budget out of the way (as before issue 9): what the bound saves.
        result["burst"].append(burst(served, cores, body, {"LATENTSERVE_MAX_INFLIGHT_BODY_BYTES": str(2**40)},
                                     print, "no budget"))
    result["loadavg_end"] = machine.loadavg()
    result["checks"] = (_mixed_checks(result["mixed"]) if result["mixed"] else []) + _burst_checks(result["burst"][0])
    result["passed"] = all(c["passed"] for c in result["checks"])
    return result


def _mixed_checks(m: dict) -> list[dict]:
    ratio = m["bulk_mixed_images_per_s"] / m["bulk_alone_images_per_s"]
    return [
        {"target": "single-image JSON /encode p50 < 50 ms under 16 bulk .npy clients",
         "measured": f"{m['single_p50_ms']:.1f} ms (p99 {m['single_p99_ms']:.1f} ms)",
         "passed": m["single_p50_ms"] < 50},
        {"target": "bulk images/s with the single-image client >= 0.9 x without",
         "measured": f"{m['bulk_mixed_images_per_s']:,.0f} / {m['bulk_alone_images_per_s']:,.0f} = {ratio:.2f} x",
         "passed": ratio >= 0.9},
    ]


def _burst_checks(b: dict) -> list[dict]:
    bad = {k: v for k, v in b["statuses"].items() if k not in ("200", "503")}
    return [
        {"target": f"{BURST} concurrent ~15 MiB JSON bodies: RSS grows < 1 GiB",
         "measured": f"{b['rss_before_mib']:.0f} -> {b['rss_peak_mib']:.0f} MiB (+{b['growth_mib']:.0f})",
         "passed": b["growth_mib"] < 1024},
        {"target": "every burst answer 200 or 503", "measured": str(b["statuses"]), "passed": not bad},
    ]


def markdown(result: dict) -> str:
    m, mc = result["machine"], result["mixed"]
    lines = [
        f"## mixed workload and bulk memory (issue 9): {m['date']}",
        "",
        f"- {m['cpu']}, nproc {m['nproc']}, torch {m['torch']}; {result['pinning']}; load average "
        f"{result['loadavg_start']:.2f} at the start, {result['loadavg_end']:.2f} at the end (a 2-core VM shared "
        f"with other jobs: figures are noisy, compare the ratios). Default settings; artifacts: {result['artifacts']}.",
        f"- Bulk memory: {BURST} concurrent {result['json_body_mib']:.1f} MiB JSON /encode bodies (1,024 images each) "
        "sent at once; server RSS sampled every 50 ms.",
        "",
        "| run | statuses | RSS before | peak | 5 s after | time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    if mc:
        lines[3:3] = _mixed_lines(mc)
    for b in result["burst"]:
        lines.append(f"| {b['label']} | {b['statuses']} | {b['rss_before_mib']:.0f} MiB | {b['rss_peak_mib']:.0f} MiB "
                     f"| {b['rss_after_5s_mib']:.0f} MiB | {b['wall_s']:.1f} s |")
    lines += ["", checks_table(result["checks"])]
    return "\n".join(lines) + "\n"


def _mixed_lines(mc: dict) -> list[str]:
    return [
        f"- Mixed: {BULK_CLIENTS} wrk connections of 1,024-image uint8 .npy /encode, alone and with one more "
        f"connection of single-image JSON /encode, and with GET /healthz paced at the rate the single-image client "
        f"reached (the control: no queue, no model); medians of {mc['rounds']} alternating rounds of "
        f"{mc['round_s']:g} s each.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| bulk images/s, bulk alone | {mc['bulk_alone_images_per_s']:,.0f} |",
        f"| bulk images/s, with the single-image client | {mc['bulk_mixed_images_per_s']:,.0f} |",
        f"| single-image p50 / p99 under bulk | {mc['single_p50_ms']:.1f} / {mc['single_p99_ms']:.1f} ms |",
        f"| single-image req/s under bulk | {mc['single_req_per_s']:.0f} |",
        f"| bulk images/s, with GET /healthz at that rate (control) | {mc['bulk_control_images_per_s']:,.0f} "
        f"({mc['control_req_per_s']:.0f} req/s) |",
        f"| ratios to bulk alone: with the single-image client / with the control | "
        f"{mc['bulk_mixed_images_per_s'] / mc['bulk_alone_images_per_s']:.2f} x / "
        f"{mc['bulk_control_images_per_s'] / mc['bulk_alone_images_per_s']:.2f} x |",
        "",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-s", type=float, default=10.0)
    p.add_argument("--no-compare", dest="compare", action="store_false", help="skip the burst without a budget")
    add_run_options(p, "mixed")
    args = p.parse_args(argv)
    result = measure(args)
    return publish("mixed", result, markdown(result), args.out_dir, args.benchmarks_md)


if __name__ == "__main__":
    sys.exit(main())
