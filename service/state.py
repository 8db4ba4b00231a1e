"""Everything one app instance owns at run time, created in `create_app` (cheap) and started by the lifespan."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import torch

from service.batcher import BatchConfig
from service.compute import Activity, ComputeThread
from service.device import Placement, flush_denormals, resolve_device
from service.limits import BodyBudget, BodyReader
from service.metrics import Metrics
from service.poll import Poller
from service.registry import Registry
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("service")


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    activity: Activity = field(default_factory=Activity)
    registry: Registry | None = None
    compute: ComputeThread | None = None
    initial_load: asyncio.Task | None = None
    poller: Poller | None = None
    polling: asyncio.Task | None = None
    loaded: bool = False
    draining: bool = False
    bodies: BodyReader = field(init=False)

    def __post_init__(self) -> None:
        rejections = self.metrics.rejections
        budget = BodyBudget(self.settings.max_inflight_body_bytes, lambda reason: rejections.labels(reason).inc())
        self.bodies = BodyReader(budget, self.settings.body_timeout_s)
        self.metrics.queue_capacity.set(self.settings.max_queue_items)

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining and self.registry is not None and len(self.registry) > 0

    async def start(self) -> None:
        """Picks the device (refusing to start on a bad one), then loads and warms the artifacts in the background."""
        device = resolve_device(self.settings.device)
        self.compute = ComputeThread(self.activity, name="compute", initializer=flush_denormals)
        runtime = Runtime(Placement(device), self.compute, self.activity, BatchConfig.from_settings(self.settings),
                          self.metrics)
        self.registry = Registry(self.settings.artifacts_dir, self.settings.default_model, runtime)
        log.info("latentserve on %s (%d torch threads), artifacts from %s", device, torch.get_num_threads(),
                 self.settings.artifacts_dir)
        loop = asyncio.get_running_loop()
        self.initial_load = loop.create_task(self._load())
        if self.settings.poll_s > 0:
            self.poller = Poller(self.settings.artifacts_dir, self.reload, self.settings.poll_s)
            self.polling = loop.create_task(self._poll())

    async def reload(self, pending: frozenset[tuple[str, int]] = frozenset()) -> dict:
        """Registry.reload, after which the service counts as loaded (POST /admin/reload and the poller)."""
        report = await self.registry.reload(pending)
        self.loaded = True
        self.update_ready()
        return report

    async def _poll(self) -> None:
        await asyncio.wait([self.initial_load])  # the first scan starts from what the initial load saw
        await self.poller.run()

    async def _load(self) -> None:
        try:
            report = await self.registry.reload()
        except Exception:
            log.exception("loading the artifacts failed; /readyz stays 503 until POST /admin/reload succeeds")
            return
        self.loaded = True
        self.update_ready()
        if not len(self.registry):
            log.warning("no usable artifacts under %s; /readyz answers 503 until POST /admin/reload finds some",
                        self.settings.artifacts_dir)
        elif self.settings.default_model not in self.registry.models:
            log.warning("default model %r is not among the loaded ones (%s)", self.settings.default_model,
                        ", ".join(report["serving"]))
        else:
            log.info("ready: serving %s", ", ".join(f"{n}/{v}" for n, v in report["serving"].items()))

    def update_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready else 0)

    def drain(self) -> None:
        """Readiness turns 503 at once; requests already received still finish."""
        if not self.draining:
            log.info("draining: /readyz now answers 503, in-flight requests finish")
        self.draining = True
        self.update_ready()

    async def stop(self) -> None:
        self.drain()
        if self.polling is not None:
            self.polling.cancel()
        if self.initial_load is not None and not self.initial_load.done():
            self.initial_load.cancel()
        if self.registry is not None:
            await self.registry.close()
        if self.compute is not None:
            await asyncio.to_thread(self.compute.shutdown)


@asynccontextmanager
async def drain_on_signals(state: ServiceState) -> AsyncIterator[None]:
    """SIGTERM/SIGINT drain `state` first while inside (`hook_signals`), and the handlers before are put back after."""
    previous = hook_signals(state)
    try:
        yield
    finally:
        unhook_signals(previous)


def hook_signals(state: ServiceState) -> dict:
    """Chains a handler in front of the server's SIGTERM/SIGINT handlers that flips readiness first and hands the
    signal on `drain_grace_s` later, so that /readyz answers 503 (and requests are still served) while load balancers
    notice; a second signal is handed on at once. Call from the event loop's thread."""
    loop = asyncio.get_running_loop()
    grace_s = state.settings.drain_grace_s
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(sig)

        def handler(signum, frame, before=before):
            first = not state.draining
            state.drain()
            if first and grace_s > 0:
                log.info("stopping in %g s (drain grace); a second signal stops at once", grace_s)
                # A signal handler may interrupt the loop itself: only the thread-safe call touches it.
                loop.call_soon_threadsafe(loop.call_later, grace_s, _hand_on, before, signum)
                return
            _hand_on(before, signum, frame)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread: the server owns signals there
            return previous
        previous[sig] = before
    return previous


def _hand_on(before, signum: int, frame=None) -> None:
    if callable(before):
        before(signum, frame)
    elif before == signal.SIG_DFL:
        raise SystemExit(128 + signum)


def unhook_signals(previous: dict) -> None:
    for sig, before in previous.items():
        signal.signal(sig, before)
