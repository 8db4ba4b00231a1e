"""Reads the service's Prometheus text: the mean items per forward pass over a scenario comes from
`latentserve_batch_size` (its _sum and _count, summed over every label set)."""

from __future__ import annotations

import urllib.request


def fetch(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        return r.read().decode()


def histogram_totals(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of histogram `name` over all its label sets."""
    total_sum = total_count = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base = metric.split("{", 1)[0]
        if base == f"{name}_sum":
            total_sum += float(value)
        elif base == f"{name}_count":
            total_count += float(value)
    return total_sum, total_count


class BatchSizeMeter:
    """Mean batch size between start() and stop(); None when the service exposes no such histogram."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._start: tuple[float, float] | None = None

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        items, passes = end[0] - self._start[0], end[1] - self._start[1]
        return items / passes if passes else None

    def _read(self) -> tuple[float, float] | None:
        try:
            totals = histogram_totals(fetch(self.base_url), "latentserve_batch_size")
        except OSError:
            return None
        return totals if totals[1] else (0.0, 0.0)
