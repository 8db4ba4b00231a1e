"""One benchmark run: references (in-process, framework floor), then every scenario at every concurrency with
batching on and off, each against a fresh pinned uvicorn process. Returns plain dicts for report.py and plot.py."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import artifacts, bodies, machine
from bench import client as client_bench
from bench.metrics import ScenarioMeter
from bench.scenarios import BY_NAME, FLOORS, PAIRS, SCENARIOS, Scenario, probe
from bench.server import REPO, Server
from bench.wrk import Load, run_wrk

SERVICE_APP = "service.app:app"
FLOOR_APP = "bench.floor:app"
# "Batching off": one item per forward pass; everything else as configured.
BATCHING_ENV = {"on": {}, "off": {"LATENTSERVE_MAX_BATCH_SIZE": "1"}}


@dataclass
class RunConfig:
    duration_s: float = 10.0
    warmup_s: float = 2.0
    concurrency: list[int] = field(default_factory=lambda: [1, 16, 64])
    scenarios: list[str] = field(default_factory=lambda: [s.name for s in SCENARIOS])
    batching: list[str] = field(default_factory=lambda: ["on", "off"])
    artifacts_dir: Path = REPO / "artifacts"
    out_dir: Path = REPO / "bench" / "out"
    server_cores: int | None = None
    inprocess_time_s: float = 1.0
    paired_rounds: int = 5  # alternating on/off rounds behind the "on >= off" checks below the top concurrency
    paired_round_s: float = 2.0
    access_log_rounds: int = 10  # rounds of JSON access lines on against off, and a control (0 skips them)
    client_rounds: int = 10  # alternating rounds of bench.client (Client.encode against bulk .npy); 0 skips it
    service_env: dict[str, str] = field(default_factory=dict)
    service_app: str = SERVICE_APP
    log: callable = print


def run(cfg: RunConfig) -> dict:
    cores = machine.split_cores(cfg.server_cores)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    served, served_desc = artifacts.ensure(cfg.artifacts_dir, cfg.out_dir / "artifacts")
    body_files = bodies.prepare(cfg.out_dir / "bodies")
    info = {"machine": machine.describe(), "loadavg_start": machine.loadavg(), "pinning": cores.describe(),
            "artifacts": served_desc, "bodies": bodies.source(), "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s, "concurrency": cfg.concurrency, "service_env": cfg.service_env,
            "batching_off_env": BATCHING_ENV["off"]}
    cfg.log(f"[bench] {cores.describe()}; serving {served_desc}")
    info["inprocess"] = _inprocess(cores, served, cfg)
    cfg.log(f"[bench] in-process: {json.dumps(info['inprocess'])}")
    scenarios = [BY_NAME[n] for n in cfg.scenarios]
    floors = [f for f in FLOORS if any(s.reference == f"floor:{f.name}" for s in scenarios)]
    rows = []
    if floors:
        rows += _serve_and_measure(FLOOR_APP, {}, floors, "-", cores, body_files, cfg)
    for batching in cfg.batching:
        env = _service_env(served, cfg, batching)
        rows += _serve_and_measure(cfg.service_app, env, scenarios, batching, cores, body_files, cfg)
    _add_ratios(rows, info["inprocess"])
    if cfg.paired_rounds and "encode-json" in cfg.scenarios and {"on", "off"} <= set(cfg.batching):
        info["paired"] = _paired_on_off(served, cores, body_files, cfg)
    if cfg.client_rounds and "encode-npy-1024" in cfg.scenarios:
        info["client"] = client_bench.measure(cfg.service_app, _service_env(served, cfg, "on"), cores, cfg.client_rounds)
    if cfg.paired_rounds and "on" in cfg.batching:
        info["paired_protocol"] = _paired_protocol(served, cores, body_files, cfg)
    if cfg.access_log_rounds and "encode-json" in cfg.scenarios and "on" in cfg.batching:
        info["access_log"] = _paired_access_log(served, cores, body_files, cfg)
    info["loadavg_end"] = machine.loadavg()
    return {"info": info, "rows": rows}


def _service_env(served: Path, cfg: RunConfig, batching: str) -> dict[str, str]:
    return {"LATENTSERVE_ARTIFACTS_DIR": str(served), **cfg.service_env, **BATCHING_ENV[batching]}


def _inprocess(cores, served: Path, cfg: RunConfig) -> dict:
    threads = len(cores.server) or 1
    cmd = [*cores.taskset("server"), sys.executable, "-m", "bench.inprocess", "--artifacts-dir", str(served),
           "--threads", str(threads), "--min-time-s", str(cfg.inprocess_time_s)]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _serve_and_measure(app: str, env: dict, scenarios: list[Scenario], batching: str, cores, body_files,
                       cfg: RunConfig) -> list[dict]:
    rows = []
    log_path = cfg.out_dir / f"server-{'floor' if app == FLOOR_APP else 'service'}-{batching}.log"
    with Server(app, cores, env=env, log_path=log_path) as server:
        for scenario in scenarios:
            answer = probe(server.url, scenario, body_files[scenario.body].read_bytes())
            for c in cfg.concurrency:
                load = Load(server.url + scenario.path, body_files[scenario.body], c, cfg.duration_s,
                            content_type=scenario.content_type, accept=scenario.accept, headers=scenario.headers)
                if cfg.warmup_s > 0:
                    run_wrk(replace(load, duration_s=cfg.warmup_s), cores)
                meter = ScenarioMeter(server.url) if app != FLOOR_APP else None
                if meter:
                    meter.start()
                result = run_wrk(load, cores, server_cpu_s=server.cpu_s)
                mean_batch, statuses = meter.stop() if meter else (None, {})
                row = {"scenario": scenario.name, "title": scenario.title, "batching": batching,
                       "items": scenario.items, "images_per_s": result.req_per_s * scenario.items,
                       "mean_batch": mean_batch, "statuses": statuses, "probe": answer, **result.to_dict(),
                       "errors": result.errors}
                rows.append(row)
                cfg.log(f"[bench] {scenario.name:16s} batching {batching:3s} c={c:<3d} {result.req_per_s:9.1f} req/s "
                        f"p50 {result.p50_ms:7.2f} ms p99 {result.p99_ms:8.2f} ms errors {result.errors} "
                        f"server cpu {result.server_cpu or 0:.2f} wrk cpu {result.load_cpu:.2f}")
        rows_rss = server.rss_bytes()
    for row in rows:
        row["server_rss_mib"] = rows_rss / 2**20
    time.sleep(0.2)
    return rows


def _paired_on_off(served: Path, cores, body_files, cfg: RunConfig) -> dict:
    """Single-image JSON /encode with batching on against off at every concurrency but the highest, in alternating
    rounds with both servers up, so that drift on a shared machine hits both alike. Minutes apart, as in the main
    table, a lone client's req/s (the same code path on and off) varied by 5-10 % from run to run."""
    scenario, out = BY_NAME["encode-json"], {}
    with Server(cfg.service_app, cores, env=_service_env(served, cfg, "on")) as on, \
            Server(cfg.service_app, cores, env=_service_env(served, cfg, "off")) as off:
        servers = {"on": on, "off": off}
        for c in sorted(cfg.concurrency)[:-1]:
            rates = {"on": [], "off": []}
            for round_ in range(cfg.paired_rounds + 1):  # round 0 warms both up and is not kept
                for batching, server in servers.items():
                    load = Load(server.url + scenario.path, body_files[scenario.body], c, cfg.paired_round_s,
                                content_type=scenario.content_type)
                    result = run_wrk(load, cores)
                    if round_:
                        rates[batching].append(result.req_per_s)
            on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
            out[str(c)] = {"on": rates["on"], "off": rates["off"], "ratio": on_rate / off_rate if off_rate else None}
            cfg.log(f"[bench] paired on/off c={c}: medians {on_rate:.0f} / {off_rate:.0f} req/s "
                    f"over {cfg.paired_rounds} alternating rounds of {cfg.paired_round_s:g} s")
    return out


def _paired_protocol(served: Path, cores, body_files, cfg: RunConfig) -> dict:
    """Each protocol scenario against the own route doing the same work (scenarios.PAIRS), in alternating rounds on
    one server with batching on: the ratio is the median images/s of one over the other's, so that drift on a shared
    machine hits both alike."""
    pairs, out = [p for p in PAIRS if {p.scenario, p.reference} <= set(cfg.scenarios)], {}
    if not pairs:
        return out
    with Server(cfg.service_app, cores, env=_service_env(served, cfg, "on")) as server:
        for pair in pairs:
            rates = {pair.scenario: [], pair.reference: []}
            for round_ in range(cfg.paired_rounds + 1):  # round 0 warms up and is not kept
                for name in rates:
                    s = BY_NAME[name]
                    load = Load(server.url + s.path, body_files[s.body], pair.concurrency, cfg.paired_round_s,
                                content_type=s.content_type, accept=s.accept, headers=s.headers)
                    result = run_wrk(load, cores)
                    if round_:
                        rates[name].append(result.req_per_s * s.items)
            mine, theirs = statistics.median(rates[pair.scenario]), statistics.median(rates[pair.reference])
            out[pair.scenario] = {"reference": pair.reference, "concurrency": pair.concurrency, "target": pair.target,
                                  "images_per_s": rates[pair.scenario], "reference_images_per_s": rates[pair.reference],
                                  "ratio": mine / theirs if theirs else None}
            cfg.log(f"[bench] paired {pair.scenario} / {pair.reference} c={pair.concurrency}: medians {mine:.0f} / "
                    f"{theirs:.0f} images/s over {cfg.paired_rounds} alternating rounds of {cfg.paired_round_s:g} s")
    return out


def _paired_access_log(served: Path, cores, body_files, cfg: RunConfig) -> dict:
    """Single-image JSON /encode at the highest concurrency, two servers at a time, loaded at once by a wrk each and
    pinned to the same core(s), so that the machine's drift hits both alike: first the text log (no access lines)
    against LATENTSERVE_LOG_FORMAT=json (an access line per request, written to a file), then the text server against
    a second one (the control: how far apart two identical servers measure). Rounds one server after the other, as
    this was first measured, spread too widely to judge a 5 % target (BENCHMARKS.md, "access log and request IDs").

    Both servers of a pair run in every round of its phase: one that had just been loaded measured slower than one
    that had rested. Which of the two starts first alternates every round (the second measured faster), and
    a ratio is the geometric mean over the rounds of one's req/s over the other's, so the two orders weigh alike. All
    three servers get one hash seed, so that they differ in the log format only."""
    scenario, c = BY_NAME["encode-json"], max(cfg.concurrency)
    env = {**_service_env(served, cfg, "on"), "PYTHONHASHSEED": "0"}
    pairs = {"json": ("text", "json"), "control": ("text", "text2")}
    rounds: dict[str, list[dict]] = {name: [] for name in pairs}
    with Server(cfg.service_app, cores, env={**env, "LATENTSERVE_LOG_FORMAT": "text"}) as text, \
            Server(cfg.service_app, cores, env={**env, "LATENTSERVE_LOG_FORMAT": "text"}) as text2, \
            Server(cfg.service_app, cores, env={**env, "LATENTSERVE_LOG_FORMAT": "json"},
                   log_path=cfg.out_dir / "server-access-json.log") as json_log, ThreadPoolExecutor(2) as pool:
        servers = {"text": text, "text2": text2, "json": json_log}
        for name, pair in pairs.items():  # one pair after the other, every round with both
            for round_ in range(cfg.access_log_rounds + 1):  # round 0 warms them up and is not kept
                order = pair if round_ % 2 else pair[::-1]
                loads = [pool.submit(run_wrk, Load(servers[n].url + scenario.path, body_files[scenario.body], c,
                                                   cfg.paired_round_s, content_type=scenario.content_type), cores)
                         for n in order]
                rates = {n: load.result().req_per_s for n, load in zip(order, loads)}
                if round_:
                    rounds[name].append(rates)
    ratios = {name: _geometric_ratio(rounds[name], *pairs[name][::-1]) for name in pairs}
    cfg.log(f"[bench] access log c={c}: json/text {ratios['json']:.3f}, text2/text (control) {ratios['control']:.3f}, "
            f"each a pair loaded at once on one core, {cfg.access_log_rounds} rounds of {cfg.paired_round_s:g} s")
    return {"concurrency": c, "rounds": rounds, "ratio": ratios["json"], "control": ratios["control"]}


def _geometric_ratio(rounds: list[dict], top: str, bottom: str) -> float | None:
    """The geometric mean over rounds of rounds[i][top] / rounds[i][bottom]; None when a round served nothing."""
    if not rounds or any(not r[top] or not r[bottom] for r in rounds):
        return None
    return math.exp(statistics.fmean(math.log(r[top] / r[bottom]) for r in rounds))


def _add_ratios(rows: list[dict], inprocess: dict) -> None:
    """ratio = req/s over the floor's at the same concurrency, images/s over the in-process figure, or images/s over
    another scenario's at the same concurrency and batching."""
    floor = {(r["scenario"], r["concurrency"]): r for r in rows if r["batching"] == "-"}
    peers = {(r["scenario"], r["concurrency"], r["batching"]): r for r in rows}
    for row in rows:
        ref = BY_NAME[row["scenario"]].reference
        row["reference"], row["ratio"], row["ref_row"] = ref, None, None
        if ref == "self":
            row["ratio"] = 1.0
        elif ref.startswith("floor:"):
            f = floor.get((ref.split(":", 1)[1], row["concurrency"]))
            if f and f["req_per_s"]:
                row["ratio"] = row["req_per_s"] / f["req_per_s"]
                row["ref_row"] = {k: f[k] for k in ("req_per_s", "p50_ms", "p99_ms")}
        elif ref.startswith("scenario:"):
            peer = peers.get((ref.split(":", 1)[1], row["concurrency"], row["batching"]))
            if peer and peer["images_per_s"]:
                row["ratio"] = row["images_per_s"] / peer["images_per_s"]
                row["ref_row"] = {k: peer[k] for k in ("req_per_s", "images_per_s", "p50_ms", "p99_ms")}
        else:
            _, op, batch = ref.split(":")
            ref_rate = inprocess[op].get(batch)
            row["ratio"] = row["images_per_s"] / ref_rate if ref_rate else None
