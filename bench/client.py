"""Issue 10's figure: the 10,000 MNIST test images through `latentserve_client.Client.encode`, against the bulk .npy
/encode scenario (the same images as 1,024-image uint8 .npy bodies, posted with plain httpx and nothing else),
measured the same way in the same run: closed loop, the same concurrency, one pinned server, alternating rounds, the
median of each. Target: the client reaches >= 0.8 x the bulk scenario's images/s.

`python -m bench` runs it after the wrk scenarios; `python -m bench.client` runs it alone."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from bench import artifacts, bodies, machine, report
from bench.server import CLIENT_KEEPALIVE_EXPIRY_S, Server

N_IMAGES = 10_000
CONCURRENCY = 4  # requests in flight, for both: enough to keep a one-core server busy
SERVICE_APP = "service.app:app"


def _timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn(*args)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def _bulk_pass(http: httpx.Client, pool: ThreadPoolExecutor, url: str, chunks: list[bytes]) -> None:
    """Posts every chunk with `pool`'s threads and reads every reply."""

    def post(body: bytes) -> bytes:
        r = http.post(url + "/encode", content=body, headers={"Content-Type": "application/x-npy"})
        r.raise_for_status()
        return r.content

    list(pool.map(post, chunks))


def _client_pass(client, images: np.ndarray) -> None:
    posterior = client.encode(images)
    if posterior.mean.shape[0] != len(images) or not np.isfinite(posterior.mean).all():
        raise AssertionError(f"Client.encode returned {posterior.mean.shape} for {len(images)} images")


def measure(app: str, env: dict[str, str], cores: machine.CoreSplit, rounds: int = 10, n: int = N_IMAGES,
            concurrency: int = CONCURRENCY, log=print) -> dict:
    """Both figures against one fresh server; this process runs on the load generator's cores meanwhile."""
    from latentserve_client import Client

    images, source = bodies.mnist_test_images(n)
    chunks = [bodies.npy_bytes(images[a:a + bodies.N_BULK]) for a in range(0, n, bodies.N_BULK)]
    rates = {"bulk": [], "client": []}
    cpu_s = {"bulk": [], "client": []}
    affinity = os.sched_getaffinity(0)
    if cores.pinned:
        os.sched_setaffinity(0, cores.load)
    try:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                              keepalive_expiry=CLIENT_KEEPALIVE_EXPIRY_S)
        with Server(app, cores, env=env) as server, Client(server.url, max_concurrency=concurrency) as client, \
                httpx.Client(limits=limits, timeout=60) as http, ThreadPoolExecutor(concurrency) as pool:
            passes = {"bulk": lambda: _bulk_pass(http, pool, server.url, chunks),
                      "client": lambda: _client_pass(client, images)}
            for round_ in range(rounds + 1):  # round 0 warms both paths up and is not kept
                # Which goes first alternates, so that neither always follows the other's leftovers.
                for name in ("bulk", "client") if round_ % 2 else ("client", "bulk"):
                    wall, cpu = _timed(passes[name])
                    if round_:
                        rates[name].append(n / wall)
                        cpu_s[name].append(cpu)
    finally:
        os.sched_setaffinity(0, affinity)
    result = {"images": n, "source": source, "concurrency": concurrency, "rounds": rounds,
              "bulk_images_per_s": rates["bulk"], "client_images_per_s": rates["client"],
              "ratio": statistics.median(rates["client"]) / statistics.median(rates["bulk"]),
              "bulk_cpu_s": statistics.median(cpu_s["bulk"]), "client_cpu_s": statistics.median(cpu_s["client"])}
    log(f"[bench] client: Client.encode {statistics.median(rates['client']):,.0f} images/s vs bulk .npy "
        f"{statistics.median(rates['bulk']):,.0f} images/s = {result['ratio']:.2f} x "
        f"(c={concurrency}, {rounds} rounds)")
    return result


def _figures(values: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in values)


def section(result: dict, cores: machine.CoreSplit) -> str:
    m, c = machine.describe(), result["concurrency"]
    lines = [
        f"## client: {m['date']}",
        "",
        (f"- Machine: {m['cpu']}, nproc {m['nproc']} ({m['usable_cores']} usable), {m['memory_gib']} GiB; Python "
         f"{m['python']}, torch {m['torch']}. Load average {machine.loadavg():.2f} at the end (other work sharing the "
         f"cores). {cores.describe()}; the measuring process runs on the load generator's cores."),
        (f"- {result['images']:,} images ({result['source'].split(' (')[0]}), encoded by the default model: through "
         f"`Client.encode` (one call, split into 1,024-image .npy requests, {c} in flight) and as the bulk "
         f"scenario's 1,024-image uint8 .npy bodies posted with plain httpx from {c} threads. "
         f"{result['rounds']} alternating rounds after one warm-up round; medians compared."),
        f"- Bulk .npy images/s per round: {_figures(result['bulk_images_per_s'])}.",
        f"- Client.encode images/s per round: {_figures(result['client_images_per_s'])}.",
        (f"- CPU of the measuring process per pass (median): bulk {result['bulk_cpu_s'] * 1000:.0f} ms, "
         f"Client.encode {result['client_cpu_s'] * 1000:.0f} ms (what the client itself adds, whatever the noise)."),
        "",
        report.checks_table(report.client_checks(result)),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--images", type=int, default=N_IMAGES)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    report.add_run_options(p, "client")
    args = p.parse_args(argv)
    cores = machine.split_cores(args.server_cores)
    served, _ = artifacts.ensure(args.artifacts_dir, args.out_dir / "artifacts")
    result = measure(SERVICE_APP, {"LATENTSERVE_ARTIFACTS_DIR": str(served)}, cores, args.rounds, args.images,
                     args.concurrency)
    text = section(result, cores)
    print(text)
    if args.benchmarks_md:
        report.write_section(args.benchmarks_md, "client", text)
    return 0 if report.client_checks(result)[0]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
