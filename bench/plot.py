"""The PNG of a run: per scenario, throughput (images/s) and p99 latency against concurrency, batching on and off,
with the floor (single-item scenarios) or the in-process rate (batched scenarios) as a reference line.

`python -m bench.plot RESULTS.json OUT.png` redraws it from a saved run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = {"on": ("tab:blue", "o", "batching on"), "off": ("tab:orange", "s", "batching off"),
          "-": ("tab:gray", "^", "framework floor")}


def plot(run: dict, out: Path) -> Path:
    rows = run["rows"]
    names = list(dict.fromkeys(r["scenario"] for r in rows if r["batching"] != "-"))
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.8 * len(names)), squeeze=False)
    for (ax_tp, ax_p99), name in zip(axes, names):
        ref = next(r["reference"] for r in rows if r["scenario"] == name)
        series = {b: [r for r in rows if r["scenario"] == name and r["batching"] == b] for b in ("on", "off")}
        if ref.startswith("floor:"):
            series["-"] = [r for r in rows if r["scenario"] == ref.split(":", 1)[1]]
        for key, pts in series.items():
            if not pts:
                continue
            color, marker, label = _STYLE[key]
            c = [p["concurrency"] for p in pts]
            ax_tp.plot(c, [p["images_per_s"] for p in pts], marker=marker, color=color, label=label)
            ax_p99.plot(c, [p["p99_ms"] for p in pts], marker=marker, color=color, label=label)
        if ref.startswith("inprocess:"):
            _, op, batch = ref.split(":")
            ax_tp.axhline(run["info"]["inprocess"][op][batch], color="tab:gray", ls="--",
                          label=f"in-process {op}, batch {batch}")
        title = next(r["title"] for r in rows if r["scenario"] == name)
        ax_tp.set_title(f"{title}: throughput", fontsize=9)
        ax_p99.set_title(f"{title}: p99 latency", fontsize=9)
        ax_tp.set_ylabel("images/s")
        ax_p99.set_ylabel("p99 ms")
        ax_p99.set_yscale("log")
        for ax in (ax_tp, ax_p99):
            ax.set_xscale("log", base=2)
            conc = sorted({r["concurrency"] for r in rows})
            ax.set_xticks(conc, [str(c) for c in conc])
            ax.set_xlabel("concurrency (connections)")
            ax.grid(True, alpha=0.3)
        ax_tp.set_ylim(bottom=0)
        ax_tp.legend(fontsize=7)
    m = run["info"]["machine"]
    fig.suptitle(f"latentserve, {m['cpu']}, {m['usable_cores']} cores, {m['date']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
