"""Reads the service's Prometheus text: the mean items per forward pass over a scenario comes from
`latentserve_batch_size` (its _sum and _count, summed over every label set). Parsing is prometheus_client's."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _samples(text: str, name: str):
    """Every sample of metric family `name` (a counter's family name has no `_total`), parsed by prometheus_client."""
    family = name.removesuffix("_total")
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            yield from metric.samples


def histogram_totals(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of histogram `name` over all its label sets."""
    samples = list(_samples(text, name))
    return (sum(s.value for s in samples if s.name == f"{name}_sum"),
            sum(s.value for s in samples if s.name == f"{name}_count"))


def counts_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """Counter `name` summed by the value of one label, e.g. requests by status."""
    out: dict[str, float] = {}
    for s in _samples(text, name):
        if s.name == name and label in s.labels:
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return out


class ScenarioMeter:
    """Between start() and stop(): mean items per forward pass (None without the histogram) and responses by status
    as the service counted them (how the non-2xx that wrk only counts split into 503, 504, ...)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._start: str | None = None

    def start(self) -> None:
        self._start = self._text()

    def stop(self) -> tuple[float | None, dict[str, int]]:
        end = self._text()
        if self._start is None or end is None:
            return None, {}
        (s0, n0), (s1, n1) = (histogram_totals(t, "latentserve_batch_size") for t in (self._start, end))
        before = counts_by_label(self._start, "latentserve_requests_total", "status")
        after = counts_by_label(end, "latentserve_requests_total", "status")
        statuses = {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) > 0}
        return ((s1 - s0) / (n1 - n0) if n1 > n0 else None), statuses

    def _text(self) -> str | None:
        try:
            return fetch(self.base_url)
        except OSError:
            return None


def histogram_buckets(text: str, name: str, match: dict[str, str]) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of histogram `name`, summed over the label sets that have
    every label in `match`."""
    out: dict[float, float] = {}
    for s in _samples(text, name):
        if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in match.items()):
            le = float(s.labels["le"])
            out[le] = out.get(le, 0.0) + s.value
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q of the observations made between two scrapes (seconds);
    an upper estimate, as coarse as the buckets."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    target = q * counts[-1]
    return next(b for b, c in zip(bounds, counts) if c >= target)
