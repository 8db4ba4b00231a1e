"""What LATENTSERVE_POLL_S costs: two servers on the same artifacts, polling off and polling every 0.5 s (or
--poll-s), single-image JSON /encode under wrk in alternating rounds, so that drift on a shared machine hits both
alike; plus the time of one scan (lvm.watch.snapshot) in this process. Prints one JSON object.

    python -m bench.poll --rounds 6 --round-s 3 --concurrency 64
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

from bench import artifacts, bodies, machine
from bench.scenarios import BY_NAME
from bench.server import REPO, Server
from bench.wrk import Load, run_wrk
from lvm.watch import snapshot


def scan_us(root, repeats: int = 200) -> float:
    """Median microseconds of one stat scan of root, as the poller scans (manifests read once, then only stat)."""
    times, listings = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        snapshot(root, listings)
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-cores", type=int, default=None)
    args = parser.parse_args()
    out_dir = REPO / "bench" / "out"
    cores = machine.split_cores(args.server_cores)
    served, served_desc = artifacts.ensure(REPO / "artifacts", out_dir / "artifacts")
    body = bodies.prepare(out_dir / "bodies")
    scenario = BY_NAME["encode-json"]
    env = {"LATENTSERVE_ARTIFACTS_DIR": str(served)}
    rates = {"off": [], "on": []}
    with Server("service.app:app", cores, env=env) as off, \
            Server("service.app:app", cores, env={**env, "LATENTSERVE_POLL_S": str(args.poll_s)}) as on:
        servers = {"off": off, "on": on}
        for round_ in range(args.rounds + 1):  # round 0 warms both up and is not kept
            for name, server in servers.items():
                # Both are pinned to the same cores: the other one is stopped meanwhile, so that the polling
                # server's scans never run during the other's round.
                other = servers["on" if name == "off" else "off"].proc.pid
                os.kill(other, signal.SIGSTOP)
                try:
                    result = run_wrk(Load(server.url + scenario.path, body[scenario.body], args.concurrency,
                                          args.round_s, content_type=scenario.content_type), cores)
                finally:
                    os.kill(other, signal.SIGCONT)
                assert result.errors == 0, f"{name}: {result.errors} errors"
                if round_:
                    rates[name].append(round(result.req_per_s, 1))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(json.dumps({"machine": machine.describe(), "pinning": cores.describe(), "artifacts": served_desc,
                      "poll_s": args.poll_s, "concurrency": args.concurrency, "round_s": args.round_s,
                      "req_per_s": rates, "median": medians, "ratio_on_over_off": medians["on"] / medians["off"],
                      "scan_us": scan_us(served)}, indent=1))


if __name__ == "__main__":
    main()
