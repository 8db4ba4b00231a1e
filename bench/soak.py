"""The soak of issues 5 and 9: mixed traffic at concurrency 32 against a pinned uvicorn process, for --duration
seconds, with hostile clients and artifacts beside it (bench/edges.py).

~10% of requests are malformed (every kind bench/cases.py lists), each of which must get its own 4xx; every valid one
must get 200; POST /admin/reload runs every --reload-every seconds, alternately adding a new vae version and removing
it (in a scratch copy of the artifacts). Pass: zero 5xx, zero connection errors, every status as expected, RSS at
the end within 10% of its value after warm-up, p99 of the last window within 1.5x of the first window (window: one
minute, or a sixth of the run when it is shorter than five minutes). Issue 9 adds, beside them: stalled uploads (each
must get 408), hang-ups mid-upload (499 in /metrics), bursts of bulk JSON bodies and bulk .npy clients (200 or 503),
and a hostile artifact (a folder named '²', a manifest with latent_dim 30000) dropped in before every other reload;
valid requests may then get 503/504 (overload), and no other 5xx may appear in /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench import artifacts, edges, machine
from bench.cases import Case, malformed_cases, valid_cases
from bench.report import add_run_options, checks_table, publish
from bench.server import CLIENT_KEEPALIVE_EXPIRY_S, Server

API_KEY = "soak-key"
MAX_BODY_BYTES = 2 * 1024 * 1024  # so the oversized-body case costs 2 MiB, not 16


def _stage_artifacts(source: Path, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".tmp-*"))
    return folder


class Rotation(edges.VersionDrops):
    """Each call adds a copy of the newest vae as the next version, or removes the copy it added last time."""

    def _add(self, newest: int) -> Path:
        src, dst = self.vae / str(newest), self.vae / str(newest + 1)
        tmp = self.vae / f".tmp-soak-{dst.name}"
        shutil.copytree(src, tmp)
        manifest = json.loads((tmp / "manifest.json").read_text())
        manifest["version"] = int(dst.name)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        os.rename(tmp, dst)
        return dst


def _budget_shed(r: httpx.Response) -> bool:
    """A 503 from the body budget (service.limits.BodyBudget): overloaded, with a Retry-After. On /v2 paths the same
    error comes in the protocol's body, `{"error": detail}`, without the type."""
    try:
        body = r.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    detail = body.get("detail", body.get("error", ""))
    return (r.status_code == 503 and body.get("type", "overloaded") == "overloaded" and "retry-after" in r.headers
            and "request bodies" in str(detail))


class Stats:
    def __init__(self) -> None:
        self.valid_lat: list[tuple[float, float]] = []  # (seconds since start, latency ms)
        self.malformed_lat: list[float] = []
        self.status = Counter()
        self.unexpected = Counter()  # (case, expected, got)
        self.conn_errors = Counter()
        self.reloads = Counter()
        self.overloaded = 0
        self.shed_unread = 0  # malformed requests refused by the body budget before their bodies could be read
        self.edges = edges.EdgeStats()


async def _worker(client, cases, weights, deadline, t0, stats, rng, record) -> None:
    while time.monotonic() < deadline:
        case: Case = rng.choices(cases, weights)[0]
        headers = dict(case.headers) | ({"Authorization": f"Bearer {API_KEY}"} if case.auth else {})
        start = time.monotonic()
        try:
            r = await client.request(case.method, case.path, content=case.body, headers=headers)
            await r.aread()
        except httpx.HTTPError as exc:
            stats.conn_errors[f"{case.name}: {type(exc).__name__}"] += 1
            continue
        latency_ms = (time.monotonic() - start) * 1e3
        if not record:
            continue
        stats.status[r.status_code] += 1
        if case.valid and r.status_code in (503, 504):  # overload, which the bulk bursts beside may cause
            stats.overloaded += 1
        elif r.status_code == 503 and _budget_shed(r):  # a body is judged only once read; the budget may shed it first
            stats.shed_unread += 1
        elif r.status_code != case.expect:
            stats.unexpected[(case.name, case.expect, r.status_code)] += 1
        if case.valid:
            stats.valid_lat.append((start - t0, latency_ms))
        else:
            stats.malformed_lat.append(latency_ms)


async def _reloader(client, deadline, every_s, rotation, stats, log, hostile=None) -> None:
    turn = 0
    while True:
        await asyncio.sleep(every_s)
        if time.monotonic() >= deadline:
            return
        turn += 1
        changer = hostile if hostile and turn % 2 == 0 else rotation
        what = changer.step() if changer else "no change"
        try:
            r = await client.post("/admin/reload", json={}, headers={"Authorization": f"Bearer {API_KEY}"})
            stats.reloads[r.status_code] += 1
            log(f"[soak] reload ({what}): {r.status_code}")
        except httpx.HTTPError as exc:
            stats.conn_errors[f"admin-reload: {type(exc).__name__}"] += 1


@dataclass(frozen=True)
class Phase:
    """One phase of traffic: `concurrency` workers drawing `cases` by `weights` for `seconds` (`record`: counted in
    the stats), a reload every `reload_every_s` that rotates or plants hostile versions, and with `rss` (a callable
    reading the server's RSS) the hostile clients."""

    url: str
    cases: list[Case]
    weights: list[float]
    seconds: float
    concurrency: int
    record: bool
    reload_every_s: float | None = None
    rotation: Rotation | None = None
    hostile: edges.HostileArtifacts | None = None
    rss: Callable[[], int] | None = None


async def _phase(phase: Phase, stats, log=print) -> float:
    url, seconds, rss = phase.url, phase.seconds, phase.rss
    # Two connections beyond the workers' (the reloader's, and one a worker may open while it waits) sit idle between
    # uses: they must expire on this side before the server's keep-alive timer closes them.
    limits = httpx.Limits(max_connections=phase.concurrency + 2, max_keepalive_connections=phase.concurrency + 2,
                          keepalive_expiry=CLIENT_KEEPALIVE_EXPIRY_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        t0 = time.monotonic()
        deadline = t0 + seconds
        tasks = [_worker(client, phase.cases, phase.weights, deadline, t0, stats, random.Random(i), phase.record)
                 for i in range(phase.concurrency)]
        if phase.reload_every_s:
            tasks.append(_reloader(client, deadline, phase.reload_every_s, phase.rotation, stats, log, phase.hostile))
        if rss:  # the hostile clients; bursts stop early, so that the end's RSS is read after the last one
            auth, e = {"Authorization": f"Bearer {API_KEY}"}, stats.edges
            # Their own client, without keep-alive: a burst's connections would sit idle past the server's
            # keep-alive timeout and race its close when picked up again (a ReadError that says nothing).
            bulk = httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0))
            tasks += [edges.stalled_uploads(url, API_KEY, deadline, e), edges.hang_ups(url, API_KEY, deadline, e),
                      edges.bulk_bursts(bulk, auth, t0 + 0.8 * seconds, e, rss, seconds / 8, log),
                      edges.bulk_npy_client(bulk, auth, deadline, e), edges.bulk_npy_client(bulk, auth, deadline, e)]
        try:
            await asyncio.gather(*tasks)
        finally:
            if rss:
                await bulk.aclose()
        return time.monotonic() - t0


def _p99(values) -> float | None:
    return float(np.percentile(values, 99)) if len(values) else None


def soak(args) -> dict:
    cores = machine.split_cores(args.server_cores)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    served, desc = artifacts.ensure(args.artifacts_dir, out / "artifacts")
    root = _stage_artifacts(served, out / "soak-artifacts")
    env = {"LATENTSERVE_ARTIFACTS_DIR": str(root), "LATENTSERVE_API_KEY": API_KEY,
           "LATENTSERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "LATENTSERVE_BODY_TIMEOUT_S": str(edges.BODY_TIMEOUT_S),
           "LATENTSERVE_MAX_INFLIGHT_BODY_BYTES": str(edges.BODY_BUDGET_BYTES)}
    log = print
    with Server("service.app:app", cores, env=env, log_path=out / "server-soak.log") as server:
        if cores.pinned:
            os.sched_setaffinity(0, cores.load)  # this driver runs on the load cores, away from the server
        models_reply = httpx.get(server.url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
        models = {m["name"]: int(m["latent_dim"]) for m in models_reply["models"]}
        valid = valid_cases(models)
        bad = malformed_cases(models.get("vae", 2), MAX_BODY_BYTES, 1024)
        # 90% valid, 10% malformed, spread evenly within each group.
        cases = valid + bad
        weights = [0.9 / len(valid)] * len(valid) + [0.1 / len(bad)] * len(bad)
        log(f"[soak] {cores.describe()}; {desc}; models {models}; {len(valid)} valid and {len(bad)} malformed cases")
        warm = Stats()
        asyncio.run(_phase(Phase(server.url, cases, weights, args.warmup, args.concurrency, record=False), warm))
        rss_warm = server.rss_bytes()
        cpu0, proc0, wall0 = server.cpu_s(), time.process_time(), time.monotonic()
        stats = Stats()
        rss_series = []

        async def sample_rss():
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                rss_series.append((round(time.monotonic() - wall0, 1), server.rss_bytes()))
                await asyncio.sleep(min(5.0, args.duration / 10))

        async def main_phase():
            rotation = Rotation(root) if args.rotate else None
            hostile = edges.HostileArtifacts(root) if args.hostile_artifacts else None
            await asyncio.gather(
                _phase(Phase(server.url, cases, weights, args.duration, args.concurrency, True, args.reload_every,
                             rotation, hostile, server.rss_bytes if args.hostile else None), stats, log),
                sample_rss())

        asyncio.run(main_phase())
        wall = time.monotonic() - wall0
        time.sleep(1.0)  # hang-ups of the last moment reach /metrics
        scrape = httpx.get(server.url + "/metrics").text
        rss_end = server.rss_bytes()
        server_cpu, driver_cpu = (server.cpu_s() - cpu0) / wall, (time.process_time() - proc0) / wall
        exit_code = server.stop()
    window = 60.0 if args.duration >= 300 else args.duration / 6
    first = [lat for t, lat in stats.valid_lat if t < window]
    last = [lat for t, lat in stats.valid_lat if t >= args.duration - window]
    p99_first, p99_last = _p99(first), _p99(last)
    n = sum(stats.status.values())
    errors_5xx = sum(v for k, v in stats.status.items() if k >= 500 and k not in (503, 504))
    server_5xx = edges.metrics_5xx(scrape)
    other_5xx = sum(v for k, v in server_5xx.items() if k not in ("503", "504"))
    e = stats.edges
    hung_up = e.outcomes.get(("hang-up", "sent"), 0)
    seen_499 = sum(int(float(line.rsplit(" ", 1)[1])) for line in scrape.splitlines()
                   if line.startswith("latentserve_requests_total{") and 'status="499"' in line)
    result = {
        "machine": machine.describe(), "pinning": cores.describe(), "artifacts": desc, "duration_s": args.duration,
        "warmup_s": args.warmup, "concurrency": args.concurrency, "requests": n, "req_per_s": n / wall,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "malformed": len(stats.malformed_lat), "unexpected": [f"{c}: expected {e}, got {g} (x{k})"
                                                            for (c, e, g), k in stats.unexpected.items()],
        "connection_errors": dict(stats.conn_errors), "reloads": {str(k): v for k, v in stats.reloads.items()},
        "rss_after_warmup_mib": rss_warm / 2**20, "rss_end_mib": rss_end / 2**20,
        "rss_max_mib": max([b for _, b in rss_series] + [rss_end]) / 2**20,
        "rss_series_mib": [(t, round(b / 2**20, 1)) for t, b in rss_series],
        "window_s": window, "p99_first_ms": p99_first, "p99_last_ms": p99_last,
        "p50_ms": float(np.percentile([lat for _, lat in stats.valid_lat], 50)) if stats.valid_lat else None,
        "malformed_p99_ms": _p99(stats.malformed_lat), "server_cpu": server_cpu, "driver_cpu": driver_cpu,
        "server_exit_code": exit_code, "overloaded_valid": stats.overloaded, "shed_unread": stats.shed_unread,
        "server_5xx": dict(server_5xx),
        "edges": {f"{k}: {o}": n for (k, o), n in sorted(e.outcomes.items())},
        "edges_unexpected": {f"{k}: {o}": n for (k, o), n in e.unexpected.items()}, "bursts": e.bursts,
        "hang_ups": hung_up, "metrics_499": seen_499,
        "rejections": [line for line in scrape.splitlines() if line.startswith("latentserve_rejections_total{")],
    }
    rss_ratio = rss_end / rss_warm
    p99_ratio = p99_last / p99_first if p99_first and p99_last else None
    result["checks"] = [
        {"target": "zero 5xx other than 503/504 (workers; every request in /metrics)",
         "measured": f"{errors_5xx}; /metrics {dict(server_5xx) or 0} ({stats.overloaded} valid requests got 503/504; "
                     f"{stats.shed_unread} malformed ones were shed by the body budget before they were read)",
         "passed": errors_5xx == 0 and other_5xx == 0},
        {"target": "zero connection errors", "measured": str(sum(stats.conn_errors.values())),
         "passed": not stats.conn_errors},
        {"target": "every request got its expected status (200, or its 4xx)",
         "measured": f"{sum(stats.unexpected.values())} unexpected of {n}", "passed": not stats.unexpected},
        *([{"target": "hostile clients got what they should (408 stalled, 200/503 bulk)",
            "measured": json.dumps(result["edges"]), "passed": bool(e.outcomes) and not e.unexpected},
           {"target": "hang-ups mid-upload counted as 499", "measured": f"{seen_499} of {hung_up}",
            "passed": hung_up > 0 and seen_499 >= 0.9 * hung_up}] if args.hostile else []),
        {"target": "admin reloads answered 200", "measured": json.dumps(result["reloads"]),
         "passed": bool(stats.reloads) and set(stats.reloads) == {200}},
        {"target": "RSS at end within 10% of after warm-up",
         "measured": f"{rss_warm / 2**20:.0f} -> {rss_end / 2**20:.0f} MiB ({rss_ratio:.3f} x)",
         "passed": rss_ratio <= 1.10},
        {"target": "p99 last window <= 1.5 x first",
         "measured": "-" if p99_ratio is None else f"{p99_first:.1f} -> {p99_last:.1f} ms ({p99_ratio:.2f} x)",
         "passed": p99_ratio is not None and p99_ratio <= 1.5},
    ]
    result["passed"] = all(c["passed"] for c in result["checks"])
    return result


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"## soak: {m['date']}",
        "",
        f"- {m['cpu']}, nproc {m['nproc']}, torch {m['torch']}. {result['pinning']} (the Python driver takes the "
        f"load cores: it used {result['driver_cpu']:.0%} of a core, the server {result['server_cpu']:.0%}).",
        f"- {result['duration_s']:g} s after {result['warmup_s']:g} s of warm-up, concurrency {result['concurrency']}, "
        f"{result['requests']:,} requests ({result['req_per_s']:.0f}/s), {result['malformed']:,} of them malformed; "
        f"statuses {result['status']}; median {result['p50_ms']:.1f} ms; artifacts: {result['artifacts']}.",
        "",
        checks_table(result["checks"], "check"),
    ]
    if result["unexpected"]:
        lines += ["", "Unexpected statuses: " + "; ".join(result["unexpected"][:20])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of measured traffic (CI: 30)")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--reload-every", type=float, help="seconds between POST /admin/reload (default duration/10)")
    p.add_argument("--no-rotate", dest="rotate", action="store_false", help="reload without adding/removing versions")
    p.add_argument("--no-hostile", dest="hostile", action="store_false",
                   help="without the hostile clients of issue 9 (stalled uploads, hang-ups, bulk bursts)")
    p.add_argument("--no-hostile-artifacts", dest="hostile_artifacts", action="store_false",
                   help="without the hostile artifacts dropped in before reloads")
    add_run_options(p, "soak")
    args = p.parse_args(argv)
    args.reload_every = args.reload_every or max(2.0, args.duration / 10)
    result = soak(args)
    return publish("soak", result, markdown(result), args.out_dir, args.benchmarks_md)


if __name__ == "__main__":
    sys.exit(main())
