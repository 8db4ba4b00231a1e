"""`python -m bench`: the benchmark of issue 5. Full run by default (make bench); --smoke is the CI version.

Writes the raw results (JSON), a PNG plot, and refreshes this run's section of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import report
from bench.plot import plot
from bench.run import RunConfig, run
from bench.scenarios import SCENARIOS
from bench.server import REPO
from bench.wrk import wrk_path

SMOKE = {"duration_s": 2.0, "warmup_s": 1.0, "concurrency": [4], "scenarios": ["encode-json", "encode-npy-1024"],
         "batching": ["on"], "inprocess_time_s": 0.2, "client_rounds": 1,
         "access_log_rounds": 0}


def _env_pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="CI mode: 2 scenarios, c=4, 2 s each, no BENCHMARKS.md")
    p.add_argument("--duration", type=float, help="seconds per figure (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each figure (default 2)")
    p.add_argument("--concurrency", help="comma-separated (default 1,16,64)")
    p.add_argument("--scenarios", help="comma-separated, from: " + ", ".join(s.name for s in SCENARIOS))
    p.add_argument("--batching", help="on,off (default both)")
    p.add_argument("--server-cores", type=int, help="cores pinned to the server (default: 1 of 2, else a quarter)")
    p.add_argument("--artifacts-dir", type=Path, default=REPO / "artifacts")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "out", help="scratch: bodies, logs, JSON")
    p.add_argument("--label", help="section of BENCHMARKS.md and name of the plot (default cpu, or cuda)")
    p.add_argument("--benchmarks-md", type=Path, help="file to refresh (default BENCHMARKS.md; none in --smoke)")
    p.add_argument("--plot", type=Path, help="PNG path (default bench/results/LABEL.png; out-dir in --smoke)")
    p.add_argument("--app", default="service.app:app", help="ASGI app to benchmark (module:attribute)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service setting")
    args = p.parse_args(argv)
    if wrk_path() is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    cfg = RunConfig(**(SMOKE if args.smoke else {}))
    cfg.artifacts_dir, cfg.out_dir, cfg.service_env = args.artifacts_dir, args.out_dir, _env_pairs(args.env)
    cfg.service_app = args.app
    for name, value in (("duration_s", args.duration), ("warmup_s", args.warmup), ("server_cores", args.server_cores)):
        if value is not None:
            setattr(cfg, name, value)
    if args.concurrency:
        cfg.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.scenarios:
        cfg.scenarios = args.scenarios.split(",")
    if args.batching:
        cfg.batching = args.batching.split(",")
    import torch

    label = args.label or ("smoke" if args.smoke else "cuda" if torch.cuda.is_available() else "cpu")
    result = run(cfg)
    (cfg.out_dir / f"{label}.json").write_text(json.dumps(result, indent=1))
    png = args.plot or (cfg.out_dir / f"{label}.png" if args.smoke else REPO / "bench" / "results" / f"{label}.png")
    plot(result, png)
    md = args.benchmarks_md or (None if args.smoke else REPO / "BENCHMARKS.md")
    checks = report.checks(result)
    print(report.results_table(result["rows"]))
    print(report.checks_table(checks))
    if md is not None:
        rel = Path(png).resolve().relative_to(md.resolve().parent) if png.resolve().is_relative_to(
            md.resolve().parent) else png
        report.write_section(md, label, report.section(result, label, str(rel)))
        print(f"[bench] refreshed section '{label}' of {md}; plot {png}")
    errors = sum(r["errors"] for r in result["rows"] if r["batching"] in ("on", "-"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
