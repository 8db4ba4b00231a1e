"""What machine a run happened on, and how its cores are split between the server and the load generator."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class CoreSplit:
    server: list[int]
    load: list[int]

    @property
    def pinned(self) -> bool:
        return bool(self.server) and bool(self.load)

    def taskset(self, role: str) -> list[str]:
        """The `taskset -c ...` prefix for 'server' or 'load', empty when the machine has one core."""
        cores = self.server if role == "server" else self.load
        return ["taskset", "-c", ",".join(map(str, cores))] if self.pinned else []

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (one core: server and load generator share it)"
        return f"server pinned to cores {_ranges(self.server)}, load generator to cores {_ranges(self.load)} (taskset)"


def split_cores(server_cores: int | None = None) -> CoreSplit:
    """Two cores: server on the first, load on the second. More: the server gets a quarter (at least one)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return CoreSplit(server=[], load=[])
    n_server = server_cores or max(1, len(cores) // 4)
    n_server = min(n_server, len(cores) - 1)
    return CoreSplit(server=cores[:n_server], load=cores[n_server:])


def _ranges(cores: list[int]) -> str:
    return f"{cores[0]}" if len(cores) == 1 else f"{cores[0]}-{cores[-1]}" if cores == list(
        range(cores[0], cores[-1] + 1)) else ",".join(map(str, cores))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> dict:
    """CPU model, core count, memory, torch version, GPU if any, date (UTC)."""
    import torch

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kernel": platform.release(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def loadavg() -> float:
    """The 1-minute load average: a busy machine (other jobs) makes every figure noisier."""
    return os.getloadavg()[0]
