"""Turns a run's rows into the results table, the target checks (issue 5) and a section of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from bench.server import REPO

# The issue's targets. Below the top concurrency "on >= off" is judged on the paired rounds when the run has them
# (bench.run._paired_on_off), and ON_OFF_TOLERANCE absorbs what noise is left (said in the table); at the highest
# concurrency batching on must be strictly better, with no tolerance.
ON_OFF_TOLERANCE = 0.03
CLIENT_TARGET = 0.8  # bench.client: Client.encode's images/s against bulk .npy /encode's


def _row(rows, scenario, batching, c):
    return next((r for r in rows if r["scenario"] == scenario and r["batching"] == batching
                 and r["concurrency"] == c), None)


def checks(run: dict) -> list[dict]:
    """[{target, measured, passed (True/False/None when not measured)}]."""
    rows, out = run["rows"], []
    paired = run.get("info", {}).get("paired", {})
    conc = sorted({r["concurrency"] for r in rows})
    hi = conc[-1] if conc else None

    def add(target, measured, passed):
        out.append({"target": target, "measured": measured, "passed": passed})

    top = _row(rows, "encode-json", "on", 64)
    if top and top["ref_row"]:
        f = top["ref_row"]
        add("encode-json c=64: req/s >= 0.70 x floor", f"{top['req_per_s']:.0f} vs {f['req_per_s']:.0f} "
            f"= {top['ratio']:.2f} x", top["ratio"] >= 0.70)
        add("encode-json c=64: p99 <= 2 x floor p99", f"{top['p99_ms']:.2f} ms vs {f['p99_ms']:.2f} ms "
            f"= {top['p99_ms'] / f['p99_ms']:.2f} x", top["p99_ms"] <= 2 * f["p99_ms"])
    one = _row(rows, "encode-json", "on", 1)
    if one and one["ref_row"]:
        f = one["ref_row"]
        add("encode-json c=1: p50 <= floor p50 + 0.5 ms", f"{one['p50_ms']:.2f} ms vs {f['p50_ms']:.2f} ms "
            f"(+{one['p50_ms'] - f['p50_ms']:.2f} ms)", one["p50_ms"] <= f["p50_ms"] + 0.5)
    for c in conc:
        on, off = _row(rows, "encode-json", "on", c), _row(rows, "encode-json", "off", c)
        if on and off:
            ratio = on["req_per_s"] / off["req_per_s"] if off["req_per_s"] else float("inf")
            if c == hi and len(conc) > 1:
                add(f"encode-json c={c}: batching on > off", f"{ratio:.2f} x", ratio > 1.0)
            else:
                measured = f"{ratio:.2f} x"
                pair = paired.get(str(c))
                if pair and pair["ratio"]:
                    ratio = pair["ratio"]
                    measured = (f"{ratio:.2f} x (median of {len(pair['on'])} alternating rounds; "
                                f"{measured} in the table, minutes apart)")
                add(f"encode-json c={c}: batching on >= off (-{ON_OFF_TOLERANCE:.0%} noise)", measured,
                    ratio >= 1.0 - ON_OFF_TOLERANCE)
    for scenario, target in (("encode-npy-1024", 0.60), ("decode-npy-1024", 0.50)):
        cands = [r for r in rows if r["scenario"] == scenario and r["batching"] == "on" and r["ratio"] is not None]
        if cands:
            best = max(cands, key=lambda r: r["ratio"])
            add(f"{scenario}: images/s >= {target:.2f} x in-process (best c)",
                f"{best['images_per_s']:.0f}/s at c={best['concurrency']} = {best['ratio']:.2f} x",
                best["ratio"] >= target)
    out += client_checks(run.get("info", {}).get("client"))
    _protocol_checks(run, add)
    access = run.get("info", {}).get("access_log")
    if access and access["ratio"] is not None:
        control = f"; control, text against text: {access['control']:.3f} x" if access.get("control") else ""
        add(f"encode-json c={access['concurrency']}: req/s with JSON access lines >= 0.95 x without",
            f"{access['ratio']:.3f} x (geometric mean of {len(access['rounds']['json'])} rounds, each a text and a "
            f"JSON server loaded at once on one core{control})", access["ratio"] >= 0.95)
    measured = [r for r in rows if r["batching"] in ("on", "-")]
    bad = [f"{r['scenario']} c={r['concurrency']}" + (f" {r['statuses']}" if r.get("statuses") else "")
           for r in measured if r["errors"]]
    add("zero errors / non-2xx (floor and batching on)", "none" if not bad else ", ".join(bad), not bad)
    return out


def client_checks(result: dict | None) -> list[dict]:
    """bench.client's target as a row of the checks table; none when the run did not measure it."""
    if not result:
        return []
    client, bulk = statistics.median(result["client_images_per_s"]), statistics.median(result["bulk_images_per_s"])
    target = f"Client.encode of {result['images']:,} images: images/s >= {CLIENT_TARGET:.1f} x bulk .npy /encode"
    return [{"target": target,
             "measured": f"{client:,.0f} vs {bulk:,.0f}/s = {result['ratio']:.2f} x (median of {result['rounds']} "
                         f"alternating rounds, c={result['concurrency']})",
             "passed": result["ratio"] >= CLIENT_TARGET}]


def _protocol_checks(run: dict, add) -> None:
    """Issue 11: each Open Inference Protocol scenario against the own route doing the same work, from the paired
    rounds (bench.run._paired_protocol)."""
    for name, pair in run.get("info", {}).get("paired_protocol", {}).items():
        ratio = pair["ratio"]
        add(f"{name} c={pair['concurrency']}: images/s >= {pair['target']:.2f} x {pair['reference']}",
            f"{ratio:.2f} x (median of {len(pair['images_per_s'])} alternating rounds, "
            f"{statistics.median(pair['images_per_s']):,.0f} vs {statistics.median(pair['reference_images_per_s']):,.0f}"
            " images/s)", ratio is not None and ratio >= pair["target"])


def _fmt(x, spec=".0f"):
    return "-" if x is None else format(x, spec)


def results_table(rows: list[dict]) -> str:
    head = ("| scenario | batching | c | req/s | images/s | p50 ms | p99 ms | errors | ratio | reference | "
            "mean batch | server CPU | wrk CPU |\n|" + " --- |" * 13)
    lines = [head]
    for r in rows:
        ref = r["reference"].replace("scenario:", "").replace("floor:", "floor ").replace("inprocess:", "in-process ").replace(":", " b")
        lines.append(
            f"| {r['scenario']} | {r['batching']} | {r['concurrency']} | {_fmt(r['req_per_s'], ',.0f')} | "
            f"{_fmt(r['images_per_s'], ',.0f')} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
            f"{_fmt(r['ratio'], '.2f')} | {ref} | {_fmt(r['mean_batch'], '.1f')} | "
            f"{_fmt(r['server_cpu'], '.0%')} | {r['load_cpu']:.0%} |")
    return "\n".join(lines)


def checks_table(items: list[dict], first_column: str = "target") -> str:
    """The pass/fail table of a run's checks ({target, measured, passed}; passed None when not measured)."""
    lines = [f"| {first_column} | measured | result |", "| --- | --- | --- |"]
    for c in items:
        verdict = "n/a" if c["passed"] is None else ("pass" if c["passed"] else "FAIL")
        lines.append(f"| {c['target']} | {c['measured']} | {verdict} |")
    return "\n".join(lines)


def inprocess_table(ref: dict) -> str:
    batches = sorted(ref["encode"], key=int)
    lines = ["| operation | " + " | ".join(f"batch {b}" for b in batches) + " |", "| --- |" + " --- |" * len(batches)]
    for op in ("encode", "decode"):
        lines.append(f"| {op} images/s | " + " | ".join(f"{ref[op][b]:,.0f}" for b in batches) + " |")
    return "\n".join(lines)


def section(run: dict, label: str, plot_rel: str | None) -> str:
    info, m = run["info"], run["info"]["machine"]
    ref = info["inprocess"]
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
    parts = [
        f"## {label}: {m['date']}",
        "",
        f"- Machine: {m['cpu']}, nproc {m['nproc']} ({m['usable_cores']} usable), {m['memory_gib']} GiB{gpu}; "
        f"Python {m['python']}, torch {m['torch']}, Linux {m['kernel']}. Load average {info['loadavg_start']:.2f} at "
        f"the start, {info['loadavg_end']:.2f} at the end (anything above 0 is other work sharing the cores).",
        f"- Pinning: {info['pinning']}. uvicorn, one worker, uvloop, httptools, no access log; wrk 4.1, closed "
        f"loop, `-c` = concurrency.",
        f"- Each figure: {info['duration_s']:g} s after a {info['warmup_s']:g} s warm-up. Artifacts: "
        f"{info['artifacts']}. Bodies: {info['bodies']}.",
        f"- Service settings: defaults{' + ' + str(info['service_env']) if info['service_env'] else ''}; "
        f"batching off = {info['batching_off_env']}.",
        f"- In-process reference ({ref['model']}, {ref['device']}, {ref['threads']} thread(s), same cores as the "
        f"server, `torch.inference_mode`); parsing a 1,024-image uint8 .npy takes {ref['npy_parse_1024_ms']:.2f} ms:",
        "",
        inprocess_table(ref),
        "",
        "ratio: req/s over the floor's at the same concurrency (single-item JSON scenarios), or images/s over the "
        "in-process figure named under reference. mean batch: items per forward pass, from `latentserve_batch_size`.",
        "",
        results_table(run["rows"]),
        "",
        checks_table(checks(run)),
    ]
    if plot_rel:
        parts += ["", f"![throughput and p99 against concurrency, batching on and off]({plot_rel})"]
    return "\n".join(parts) + "\n"


def add_run_options(parser: argparse.ArgumentParser, label: str) -> None:
    """The options every run against its own pinned server shares; `label` names its section of BENCHMARKS.md."""
    parser.add_argument("--server-cores", type=int, help="cores pinned to the server (default: 1 of 2, else a quarter)")
    parser.add_argument("--artifacts-dir", type=Path, default=REPO / "artifacts")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--benchmarks-md", type=Path, help=f"also refresh the '{label}' section of this file")


def publish(label: str, result: dict, text: str, out_dir: Path, benchmarks_md: Path | None) -> int:
    """Saves <out_dir>/<label>.json, prints the markdown, refreshes the label's section of BENCHMARKS.md if asked;
    returns the exit status (0 when every check passed)."""
    (out_dir / f"{label}.json").write_text(json.dumps(result, indent=1))
    print(text)
    if benchmarks_md:
        write_section(benchmarks_md, label, text)
    return 0 if result["passed"] else 1


def write_section(path: Path, label: str, text: str) -> None:
    """Replaces the section between this label's markers in `path` (the rest of the file is left alone)."""
    begin, end = f"<!-- bench:begin {label} -->", f"<!-- bench:end {label} -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `make bench` (see docs/bench.md).\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block
    path.write_text(new)
