"""What every served version shares at run time, carried as one object (`Runtime`), and the process-wide tuning a
serving process applies once (`tune_process`, `freeze_heap`, called by service.__main__ only)."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from service.batcher import BatchConfig
from service.compute import Activity, ComputeThread
from service.device import Placement, configure_threads
from service.metrics import Metrics


@dataclass(frozen=True)
class Runtime:
    """The device placement, its one compute thread, the activity its batchers report to, the batch settings and
    the metrics: handed to the registry, which hands them to each version it loads, warms and starts."""

    placement: Placement
    compute: ComputeThread
    activity: Activity
    config: BatchConfig
    metrics: Metrics


def tune_process(torch_threads: int) -> int:
    """Once per serving process, before models load: torch's intra-op threads (0: the cores this process may use)
    and the cycle collector's thresholds. Returns the thread count."""
    threads = configure_threads(torch_threads)
    # Requests make mostly acyclic garbage that reference counting frees; collect cycles less often than every
    # 700 allocations (it raised single-image /encode's req/s at concurrency 64: BENCHMARKS.md, "Figures behind").
    gc.set_threshold(20_000, 10, 10)
    return threads


def freeze_heap() -> None:
    """Once the models are loaded: moves everything alive (modules, models) out of the collector's sight, so full
    collections walk only request garbage instead of hundreds of thousands of long-lived objects (which showed as
    p99 latency spikes: BENCHMARKS.md, "Figures behind")."""
    gc.collect()
    gc.freeze()
