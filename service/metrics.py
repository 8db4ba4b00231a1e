"""Prometheus metrics, one registry per app (tests build many apps), and the pure-ASGI middleware that times every
request. Label children are bound once and cached, so a request costs two dictionary lookups and two observations.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import BatchObserver

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_ENDPOINTS = frozenset(
    ("/encode", "/decode", "/reconstruct", "/sample", "/models", "/healthz", "/readyz", "/metrics", "/admin/reload",
     "/docs", "/openapi.json")
)
# Client errors counted as rejections, by status; queue_full and timeout come from the batchers.
_REJECTION_REASONS = {401: "unauthorized", 404: "not_found", 413: "too_large", 415: "unsupported_media_type",
                      422: "invalid"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        op = ("model", "version", "operation")
        self.requests = Counter("latentserve_requests", "HTTP requests", ("endpoint", "status"), registry=r)
        self.latency = Histogram(
            "latentserve_request_seconds", "HTTP request latency", ("endpoint", "status"), buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("latentserve_batch_size", "Items per forward pass", op, buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.queue_wait = Histogram("latentserve_queue_wait_seconds", "Time from queueing to dispatch", op,
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("latentserve_compute_seconds", "Forward pass time per batch", op,
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_items = Gauge("latentserve_queue_items", "Items waiting in a queue", op, registry=r)
        self.rejections = Counter("latentserve_rejections", "Requests refused, by reason", ("reason",), registry=r)
        self.loaded = Gauge("latentserve_model_loaded", "1 per loaded model version", ("model", "version", "kind"),
                            registry=r)
        self.ready = Gauge("latentserve_ready", "1 when /readyz answers 200", registry=r)
        self._request_children: dict[tuple[str, int], tuple] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in _ENDPOINTS else "/models/{name}" if path.startswith("/models/") else "other"
        children = self._request_children.get((endpoint, status))
        if children is None:
            children = (self.requests.labels(endpoint, str(status)), self.latency.labels(endpoint, str(status)))
            self._request_children[(endpoint, status)] = children
            reason = _REJECTION_REASONS.get(status)
            if reason:
                children += (self.rejections.labels(reason),)
        children[0].inc()
        children[1].observe(seconds)
        if len(children) > 2:
            children[2].inc()

    def batch_observer(self, model: str, version: int, operation: str) -> BatchObserver:
        return _Observer(self, (model, str(version), operation))

    def model_loaded(self, model: str, version: int, kind: str) -> None:
        self.loaded.labels(model, str(version), kind).set(1)

    def model_unloaded(self, model: str, version: int, kind: str) -> None:
        """Drops every series of a version, so reloads never grow the registry."""
        series = [(self.loaded, (model, str(version), kind))]
        for operation in ("encode", "decode", "reconstruct", "sample"):
            labels = (model, str(version), operation)
            series += [(m, labels) for m in (self.batch_size, self.queue_wait, self.compute, self.queue_items)]
        for metric, labels in series:
            try:
                metric.remove(*labels)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Observer(BatchObserver):
    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._batch = metrics.batch_size.labels(*labels)
        self._wait = metrics.queue_wait.labels(*labels)
        self._compute = metrics.compute.labels(*labels)
        self._depth = metrics.queue_items.labels(*labels)
        self._rejections = metrics.rejections

    def batch(self, size: int, compute_s: float) -> None:
        self._batch.observe(size)
        self._compute.observe(compute_s)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def depth(self, items: int) -> None:
        self._depth.set(items)

    def rejected(self, reason: str) -> None:
        self._rejections.labels(reason).inc()


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint and status (pure ASGI: no BaseHTTPMiddleware overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
