"""Prometheus metrics, one registry per app (tests build many apps); service.observe's middleware counts and times
every request into them.

The series touched on every request (request latency and count, queue wait, batch size, compute time, queue depth)
are plain Python counters behind a custom collector: every observation happens on the event loop, so they need none
of prometheus_client's per-observation locks, and a request costs a bisect and two additions. The client library
still does the exposition format; the rarely touched series (rejections, loaded versions, readiness) are its own.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from service.batcher import BatchObserver
from service.errors import (
    BodyTimeout,
    ClientClosedRequest,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# Client errors counted as rejections by status, under their error types; queue_full, timeout and body_budget (finer
# reasons of 503 and 504) come from the batchers and the body budget.
_REJECTION_REASONS = {error.status: error.type for error in (
    Unauthorized, Forbidden, NotFound, BodyTimeout, PayloadTooLarge, UnsupportedMediaType, InvalidInput, RateLimited,
    ClientClosedRequest)}
_OP_LABELS = ("model", "version", "operation")


class _Histogram:
    """Bucket counts and a sum, observed from the event loop only (so without a lock)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are `value <= bound`
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def exposition(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, +Inf last."""
        buckets, total = [], 0
        for bound, n in zip((*map(str, map(float, self.bounds)), "+Inf"), self.counts):
            total += n
            buckets.append((bound, total))
        return buckets


class QueueSeries:
    """The per-(model, version, operation) series a batcher feeds; also read by Triton's statistics (oip_triton.py),
    which wants each exact batch size: `by_size` maps it to [batches, compute seconds] (at most max_batch_size keys,
    one dict update per batch)."""

    __slots__ = ("batch_size", "queue_wait", "compute", "depth", "by_size", "last_batch_at")

    def __init__(self) -> None:
        self.batch_size = _Histogram(_BATCH_BUCKETS)
        self.queue_wait = _Histogram(_LATENCY_BUCKETS)
        self.compute = _Histogram(_LATENCY_BUCKETS)
        self.depth = 0
        self.by_size: dict[int, list] = {}
        self.last_batch_at = 0.0  # time.time() at the end of the last batch; 0 before the first


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rejections = Counter("latentserve_rejections", "Requests refused, by reason", ("reason",), registry=r)
        self.loaded = Gauge("latentserve_model_loaded", "1 per loaded model version", ("model", "version", "kind"),
                            registry=r)
        self.ready = Gauge("latentserve_ready", "1 when /readyz answers 200", registry=r)
        self.queue_capacity = Gauge("latentserve_queue_capacity_items",
                                    "Bound on the items waiting in each queue (LATENTSERVE_MAX_QUEUE_ITEMS)", registry=r)
        self.refused = Gauge("latentserve_artifact_refused", "1 per artifact version the last scan refused",
                             ("model", "version"), registry=r)
        self._requests: dict[tuple[str, int], _Histogram] = {}
        self._queues: dict[tuple[str, str, str], QueueSeries] = {}
        # Requests past their queue's admission and not yet answered (service.observe counts them): the autoscaling
        # signal, as Ray Serve's ongoing requests, since it measures the load whatever the hardware.
        self.in_flight = 0
        self._keys: dict[tuple[str, int], int] = {}  # (key id, status) -> requests; ids: configured or anonymous
        r.register(_Collector(self))

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """`endpoint`: a route's path template ("/v2/models/{model_name}/infer"), or "other" where none matched, so
        that the label's values are bounded by the routes, whatever paths clients send."""
        histogram = self._requests.get((endpoint, status))
        if histogram is None:
            histogram = self._requests[(endpoint, status)] = _Histogram(_LATENCY_BUCKETS)
        histogram.observe(seconds)
        reason = _REJECTION_REASONS.get(status)
        if reason:
            self.rejections.labels(reason).inc()

    def observe_key(self, key: str, status: int) -> None:
        """One request by key id (a configured id or "anonymous": the auth middleware never passes another)."""
        self._keys[(key, status)] = self._keys.get((key, status), 0) + 1

    def batch_observer(self, model: str, version: int, operation: str) -> BatchObserver:
        series = self._queues.setdefault((model, str(version), operation), QueueSeries())
        return _Observer(series, self.rejections)

    def queue_series(self, model: str, version: int, operation: str) -> QueueSeries | None:
        return self._queues.get((model, str(version), operation))

    def model_loaded(self, model: str, version: int, kind: str) -> None:
        self.loaded.labels(model, str(version), kind).set(1)

    def model_unloaded(self, model: str, version: int, kind: str) -> None:
        """Drops every series of a version, so reloads never grow the registry."""
        for key in [key for key in self._queues if key[:2] == (model, str(version))]:
            del self._queues[key]
        try:
            self.loaded.remove(model, str(version), kind)
        except KeyError:
            pass

    def artifacts_refused(self, versions: list[tuple[str, int]]) -> None:
        """The versions the last scan refused (bad checksum, manifest or weights), replacing the previous scan's."""
        self.refused.clear()
        for model, version in versions:
            self.refused.labels(model, str(version)).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Turns the lock-free series into Prometheus families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the families are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("latentserve_requests", "HTTP requests", labels=("endpoint", "status"))
        latency = HistogramMetricFamily("latentserve_request_seconds", "HTTP request latency",
                                        labels=("endpoint", "status"))
        for (endpoint, status), histogram in list(self._metrics._requests.items()):
            labels = (endpoint, str(status))
            requests.add_metric(labels, histogram.count)
            latency.add_metric(labels, histogram.exposition(), histogram.sum)
        yield requests
        yield latency
        by_key = CounterMetricFamily("latentserve_key_requests", "HTTP requests by API key id and status (401: "
                                     "key 'anonymous'; 403 forbidden, 429 rate_limited)", labels=("key", "status"))
        for (key, status), count in list(self._metrics._keys.items()):
            by_key.add_metric((key, str(status)), count)
        yield by_key
        families = {
            "batch_size": HistogramMetricFamily("latentserve_batch_size", "Items per forward pass", labels=_OP_LABELS),
            "queue_wait": HistogramMetricFamily("latentserve_queue_wait_seconds", "Time from queueing to dispatch",
                                                labels=_OP_LABELS),
            "compute": HistogramMetricFamily("latentserve_compute_seconds", "Forward pass time per batch",
                                             labels=_OP_LABELS),
        }
        depth = GaugeMetricFamily("latentserve_queue_items", "Items waiting in a queue", labels=_OP_LABELS)
        for labels, series in list(self._metrics._queues.items()):
            for attribute, family in families.items():
                histogram = getattr(series, attribute)
                family.add_metric(labels, histogram.exposition(), histogram.sum)
            depth.add_metric(labels, series.depth)
        yield from families.values()
        yield depth
        yield GaugeMetricFamily("latentserve_requests_in_flight",
                                "Inference requests admitted and not yet answered (the autoscaling signal)",
                                value=self._metrics.in_flight)


class _Observer(BatchObserver):
    def __init__(self, series: QueueSeries, rejections: Counter) -> None:
        self._series = series
        self._rejections = rejections

    def batch(self, size: int, compute_s: float) -> None:
        series = self._series
        series.batch_size.observe(size)
        series.compute.observe(compute_s)
        per_size = series.by_size.get(size)
        if per_size is None:
            per_size = series.by_size[size] = [0, 0.0]
        per_size[0] += 1
        per_size[1] += compute_s
        series.last_batch_at = time.time()

    def waited(self, seconds: float) -> None:
        self._series.queue_wait.observe(seconds)

    def depth(self, items: int) -> None:
        self._series.depth = items

    def rejected(self, reason: str) -> None:
        self._rejections.labels(reason).inc()
