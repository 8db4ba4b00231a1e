"""The overload run of issue 5: a small queue bound, offered load far above capacity, then the load stops.

Three phases against one pinned uvicorn process: baseline (a lone probe client), overload (wrk with --connections
closed-loop connections sending the same request, the probe still running), recovery (the probe alone again). The
probe sends one request at a time and records each answer's status, latency and Retry-After. Pass: excess shed with
503 + Retry-After, the 503s fast (p99 <= --max-shed-p99-ms), the accepted requests' p99 bounded
(<= --max-accepted-p99-ms), no 504/5xx other than 503, no socket errors, and after the load stops the first probe
succeeds within 1 s and the recovery p99 is within 2x the baseline p99 + 5 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import httpx
import numpy as np

from bench import artifacts, machine
from bench.bodies import mnist_test_images, npy_bytes
from bench.metrics import bucket_quantile, fetch, histogram_buckets
from bench.report import add_run_options, checks_table, publish
from bench.server import Server
from bench.wrk import Load, run_wrk


def _probe(client: httpx.Client, body: bytes, until, pause_s: float) -> list[dict]:
    """Sequential requests until until() is true: [{t, status, ms, retry_after}]."""
    samples = []
    t0 = time.monotonic()
    while not until():
        start = time.monotonic()
        try:
            r = client.post("/encode", content=body, headers={"Content-Type": "application/x-npy"})
            status, retry = r.status_code, r.headers.get("Retry-After")
        except httpx.HTTPError as exc:
            status, retry = type(exc).__name__, None
        samples.append({"t": start - t0, "status": status, "ms": (time.monotonic() - start) * 1e3,
                        "retry_after": retry})
        time.sleep(pause_s)
    return samples


def _pct(samples, status, q) -> float | None:
    values = [s["ms"] for s in samples if s["status"] == status]
    return float(np.percentile(values, q)) if values else None


def _server_latency(url: str) -> dict[str, dict[float, float]]:
    """The service's own /encode latency histogram, by status: what it spent on each request once it read it."""
    text = fetch(url)
    return {status: histogram_buckets(text, "latentserve_request_seconds", {"status": status})
            for status in ("200", "503")}


def overload(args) -> dict:
    cores = machine.split_cores(args.server_cores)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    served, desc = artifacts.ensure(args.artifacts_dir, args.out_dir / "artifacts")
    images, _ = mnist_test_images(args.items)
    body = npy_bytes(images)
    body_file = args.out_dir / f"overload_{args.items}_npy"
    body_file.write_bytes(body)
    env = {"LATENTSERVE_ARTIFACTS_DIR": str(served), "LATENTSERVE_MAX_QUEUE_ITEMS": str(args.queue_items),
           **dict(e.split("=", 1) for e in args.env)}
    with Server(args.app, cores, env=env, log_path=args.out_dir / "server-overload.log") as server:
        if cores.pinned:
            os.sched_setaffinity(0, cores.load)
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            end = time.monotonic() + args.phase
            baseline = _probe(client, body, lambda: time.monotonic() > end, args.pause_ms / 1e3)
            box = {}

            def load():
                load = Load(server.url + "/encode", body_file, args.connections, args.phase,
                            content_type="application/x-npy", script="overload.lua")
                box["wrk"] = run_wrk(load, cores, server_cpu_s=server.cpu_s)

            thread = threading.Thread(target=load)
            before = _server_latency(server.url)
            thread.start()
            time.sleep(0.5)  # let wrk open its connections before the probe's figures count
            during = _probe(client, body, lambda: not thread.is_alive(), args.pause_ms / 1e3)
            thread.join()
            after = _server_latency(server.url)
            stopped = time.monotonic()
            end = stopped + args.phase
            recovery = _probe(client, body, lambda: time.monotonic() > end, args.pause_ms / 1e3)
        rss = server.rss_bytes()
    wrk = box["wrk"]
    first_ok = next((s["t"] for s in recovery if s["status"] == 200), None)
    shed = [s for s in during if s["status"] == 503]
    result = {
        "machine": machine.describe(), "pinning": cores.describe(), "artifacts": desc,
        "queue_items": args.queue_items, "items_per_request": args.items, "connections": args.connections,
        "phase_s": args.phase, "service_env": env,
        "baseline": {"n": len(baseline), "p50_ms": _pct(baseline, 200, 50), "p99_ms": _pct(baseline, 200, 99)},
        "overload_wrk": {"answers_per_s": wrk.raw["requests"] / (wrk.raw["duration_us"] / 1e6), "ok": wrk.raw["ok"],
                         "shed_503": wrk.raw["shed"], "shed_without_retry_after": wrk.raw["shed_no_retry"],
                         "other_status": wrk.raw["other"], "socket_errors": wrk.socket_errors,
                         "timeouts": wrk.timeouts, "p50_ms": wrk.p50_ms, "p99_ms": wrk.p99_ms,
                         "server_cpu": wrk.server_cpu},
        "overload_probe": {"n": len(during), "ok": sum(s["status"] == 200 for s in during), "shed": len(shed),
                           "accepted_p50_ms": _pct(during, 200, 50), "accepted_p99_ms": _pct(during, 200, 99),
                           "shed_p50_ms": _pct(during, 503, 50), "shed_p99_ms": _pct(during, 503, 99),
                           "shed_retry_after": sorted({s["retry_after"] for s in shed}, key=str),
                           "other": sorted({str(s["status"]) for s in during} - {"200", "503"})},
        "overload_server_side": {
            f"{status}_p{q}_ms": None if (v := bucket_quantile(before[status], after[status], q / 100)) is None
            else v * 1e3 for status in ("200", "503") for q in (50, 99)},
        "recovery": {"first_ok_s": first_ok, "p50_ms": _pct(recovery, 200, 50), "p99_ms": _pct(recovery, 200, 99),
                     "other": sorted({str(s["status"]) for s in recovery} - {"200"})},
        "rss_end_mib": rss / 2**20,
    }
    o, p, rec, base = result["overload_wrk"], result["overload_probe"], result["recovery"], result["baseline"]
    shed_p99 = p["shed_p99_ms"]
    result["checks"] = [
        {"target": "excess shed with 503", "measured": f"{o['shed_503']:,} of {o['ok'] + o['shed_503']:,} answers "
         f"to wrk", "passed": o["shed_503"] > 0},
        {"target": "every 503 has Retry-After", "measured": f"{o['shed_without_retry_after']} without; probe saw "
         f"{p['shed_retry_after']}", "passed": o["shed_without_retry_after"] == 0 and None not in p["shed_retry_after"]},
        {"target": f"503 p99 <= {args.max_shed_p99_ms:g} ms (probe)", "measured": "-" if shed_p99 is None else
         f"{p['shed_p50_ms']:.1f} / {shed_p99:.1f} ms (p50 / p99)",
         "passed": shed_p99 is not None and shed_p99 <= args.max_shed_p99_ms},
        _accepted_check(p, result["overload_server_side"], base, args.max_accepted_p99_ms),
        {"target": "no other status, no socket errors", "measured": f"wrk other {o['other_status']}, socket "
         f"{o['socket_errors']}, timeouts {o['timeouts']}; probe {p['other'] + rec['other']}",
         "passed": not (o["other_status"] or o["socket_errors"] or o["timeouts"] or p["other"] or rec["other"])},
        {"target": "recovers: first 200 within 1 s, p99 <= 2 x baseline + 5 ms",
         "measured": f"first 200 after {first_ok if first_ok is None else round(first_ok * 1e3, 1)} ms; p99 "
         f"{rec['p99_ms'] or float('nan'):.1f} ms", "passed": first_ok is not None and first_ok <= 1.0
         and rec["p99_ms"] is not None and rec["p99_ms"] <= 2 * base["p99_ms"] + 5},
    ]
    result["passed"] = all(c["passed"] for c in result["checks"])
    return result


def _accepted_check(probe: dict, server_side: dict, base: dict, limit_ms: float) -> dict:
    """From the probe when it got at least 5 requests accepted, else from the service's histogram (coarser)."""
    target = f"accepted p99 <= {limit_ms:g} ms under overload"
    if probe["ok"] >= 5:
        p99, how = probe["accepted_p99_ms"], f"probe, {probe['ok']} accepted"
    else:
        p99, how = server_side["200_p99_ms"], f"service histogram bucket; probe got {probe['ok']} accepted"
    measured = "-" if p99 is None else f"{p99:.1f} ms ({how}; baseline p99 {base['p99_ms']:.1f} ms)"
    return {"target": target, "measured": measured, "passed": p99 is not None and p99 <= limit_ms}


def markdown(result: dict) -> str:
    m, o = result["machine"], result["overload_wrk"]
    lines = [
        f"## overload: {m['date']}",
        "",
        f"- {m['cpu']}, nproc {m['nproc']}, torch {m['torch']}; {result['pinning']}.",
        f"- LATENTSERVE_MAX_QUEUE_ITEMS={result['queue_items']}; bulk /encode of {result['items_per_request']} uint8 "
        f"images (.npy); wrk {result['connections']} connections for {result['phase_s']:g} s: "
        f"{o['answers_per_s']:,.0f} answers/s ({o['ok']:,} 200, {o['shed_503']:,} 503), server CPU "
        f"{(o['server_cpu'] or 0):.0%}. Accepted under overload: {o['ok'] / result['phase_s']:,.0f} req/s; the lone "
        f"probe before it: {result['baseline']['n'] / result['phase_s']:,.0f} req/s (p50 "
        f"{result['baseline']['p50_ms']:.1f} ms). Service-side latency under overload (histogram buckets, upper "
        f"bounds): {json.dumps(result['overload_server_side'])}.",
        "",
        checks_table(result["checks"], "check"),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    p.add_argument("--phase", type=float, default=10.0, help="seconds of each phase")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--queue-items", type=int, default=64)
    p.add_argument("--items", type=int, default=32, help="images per request")
    p.add_argument("--pause-ms", type=float, default=5.0, help="the probe's pause between requests")
    p.add_argument("--max-shed-p99-ms", type=float, default=50.0)
    p.add_argument("--max-accepted-p99-ms", type=float, default=500.0)
    add_run_options(p, "overload")
    p.add_argument("--app", default="service.app:app", help="ASGI app (module:attribute)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service setting")
    args = p.parse_args(argv)
    result = overload(args)
    return publish("overload", result, markdown(result), args.out_dir, args.benchmarks_md)


if __name__ == "__main__":
    sys.exit(main())
