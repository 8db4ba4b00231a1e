"""Runs wrk with one of the Lua scripts in bench/lua and parses the JSON line its done() prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.machine import CoreSplit

LUA_DIR = Path(__file__).resolve().parent / "lua"


@dataclass
class LoadResult:
    """What one wrk run measured. req_per_s counts 2xx answers only (requests counts all). Latencies in ms, over all
    answers. load_cpu: wrk's CPU per thread (1.0 = its core saturated); server_cpu: the server's, in cores."""

    concurrency: int
    duration_s: float
    requests: int
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    timeouts: int
    load_cpu: float
    server_cpu: float | None
    raw: dict  # everything the script's done() printed

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("raw")
        return d


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass(frozen=True)
class Load:
    """What wrk sends: `body` POSTed to `url` over `concurrency` connections for `duration_s`, with these headers,
    by the Lua `script` (bench/lua)."""

    url: str
    body: Path
    concurrency: int
    duration_s: float
    content_type: str = "application/json"
    accept: str | None = None
    auth: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    script: str = "post.lua"
    timeout_s: float = 10.0


def run_wrk(load: Load, cores: CoreSplit, server_cpu_s=None) -> LoadResult:
    """Closed loop: `load.concurrency` connections, each sending its next request when the last answer arrives.

    `server_cpu_s` (a callable giving the server's CPU seconds so far) turns into the server's core utilisation.
    """
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    threads = max(1, min(load.concurrency, len(cores.load) or 1, 4))
    seconds = max(1, round(load.duration_s))
    cmd = [*cores.taskset("load"), exe, "-c", str(load.concurrency), "-t", str(threads), "-d", f"{seconds}s",
           "--timeout", f"{load.timeout_s:.0f}s", "-s", str(LUA_DIR / load.script), load.url]
    env = {**os.environ, "BENCH_BODY": str(load.body), "BENCH_CONTENT_TYPE": load.content_type,
           "BENCH_ACCEPT": load.accept or "", "BENCH_AUTH": load.auth or "",
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in load.headers)}
    cpu0 = server_cpu_s() if server_cpu_s else None
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives wrk's own CPU time: the load generator must stay well below one core per thread to be no ceiling.
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    server_cpu = (server_cpu_s() - cpu0) / wall if server_cpu_s else None
    line = next((ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    r = json.loads(line[len("WRKJSON "):])
    duration = r["duration_us"] / 1e6
    return LoadResult(
        concurrency=load.concurrency, duration_s=round(duration, 3), requests=r["requests"],
        req_per_s=(r["requests"] - r["status"]) / duration if duration else 0.0,
        p50_ms=r["p50_us"] / 1e3, p90_ms=r["p90_us"] / 1e3, p99_ms=r["p99_us"] / 1e3, max_ms=r["max_us"] / 1e3,
        non2xx=r["status"], socket_errors=r["connect"] + r["read"] + r["write"], timeouts=r["timeout"],
        load_cpu=(usage.ru_utime + usage.ru_stime) / wall / threads, server_cpu=server_cpu, raw=r)
