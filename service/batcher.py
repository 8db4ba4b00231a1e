"""Dynamic batching of any function of rows: a bounded queue per (model, version, operation), a collector task that
merges the rows of concurrent requests into one batch, and one compute thread per device that runs it.

Knows nothing of models: a batch function takes the parts of a batch (numpy, (n_i, D) each) and returns a tuple of
(B, ...) numpy arrays, which are split by rows back to each request. Devices, torch and metrics are left to callers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service import tracing
from service.compute import Activity, ComputeThread
from service.errors import Internal, Overloaded, Timeout, Unavailable

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["BatchConfig", "BatchObserver", "Batcher", "Pending"]

log = logging.getLogger("service.batcher")

BatchFn = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, ...]]


@dataclass(slots=True, eq=False)
class Pending:
    """The rows of one request, waiting for batches: rows [0, taken) have gone into batches, and the outputs of the
    ones that came back wait in `parts` while the request spans several batches. Its first batch's dispatch time and
    size are kept for the request's log line; `span` and `batch_span` are the request's and its first batch's spans when
    tracing is on (service.tracing)."""

    x: np.ndarray
    future: asyncio.Future
    enqueued_at: float
    taken: int = 0
    parts: list[tuple[np.ndarray, ...]] | None = None
    dispatched_at: float = 0.0
    batch_rows: int = 0
    span: object = None
    batch_span: object = None

    @property
    def left(self) -> int:
        return len(self.x) - self.taken


@dataclass(frozen=True)
class BatchConfig:
    """The batching settings in the batcher's units; no defaults of its own: they are the Settings' (`from_settings`)."""

    max_batch_size: int
    max_delay_s: float
    max_queue_items: int
    timeout_s: float
    max_pass_s: float  # read at warm-up to pick each queue's max_batch_size (service.models); 0: no bound

    @classmethod
    def from_settings(cls, s: Settings) -> BatchConfig:
        return cls(s.max_batch_size, s.max_batch_delay_ms / 1000.0, s.max_queue_items, s.request_timeout_s,
                   s.max_pass_ms / 1000.0)


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def batch(self, size: int, compute_s: float) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def depth(self, items: int) -> None: ...

    def rejected(self, reason: str) -> None: ...


class Batcher:
    """One queue and its collector. `submit(x)` returns fn's outputs for the rows of x, whatever shared its batch."""

    def __init__(
        self,
        fn: BatchFn,
        compute: ComputeThread,
        activity: Activity,
        config: BatchConfig,
        observer: BatchObserver | None = None,
        name: str = "batcher",
    ) -> None:
        self.fn, self.config, self.name = fn, config, name
        self._compute, self._activity = compute, activity
        self._observer = observer or BatchObserver()
        self._queue: deque[Pending] = deque()
        # Every unanswered chunk, oldest first, and the one timer that expires them: a timer per request was a
        # measurable share of a single-image request (BENCHMARKS.md), and requests are answered roughly in order.
        self._unanswered: deque[Pending] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self.queued_items = 0
        self._seconds_per_item = 0.0
        self._waiter: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"collector {self.name}")

    async def close(self) -> None:
        """Stops taking requests; what is queued still runs before the collector ends."""
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task
        if self._expiry is not None:
            self._expiry.cancel()  # everything queued has been answered
            self._expiry = None

    def retry_after_s(self) -> int:
        """Seconds the queue needs to drain at the measured cost per item (at least 1)."""
        return max(1, math.ceil(self.queued_items * self._seconds_per_item))

    def admit(self, n: int = 1) -> None:
        """Refuses with 503 when n more items would overflow the queue. Handlers call it with n = 1 before they read
        a body, so a full queue sheds load without spending the event loop on bodies it would refuse anyway."""
        if self._closing:
            raise Unavailable("this model version is being unloaded; retry", 1)
        if self.queued_items + n > self.config.max_queue_items:
            self._observer.rejected("queue_full")
            raise Overloaded(
                f"queue full ({self.queued_items} items waiting, bound {self.config.max_queue_items}); retry later",
                self.retry_after_s(),
            )

    def put(self, x: np.ndarray) -> list[Pending]:
        """Queues the rows of x at once, or refuses them with 503. Batches take them max_batch_size at most at a time.
        (A list of one: callers hand it back to `result`.)"""
        n = len(x)
        self.admit(n)
        loop = asyncio.get_running_loop()
        pendings = [Pending(x, loop.create_future(), loop.time())]
        if tracing.tracer is not None:
            pendings[0].span = tracing.current_span()
        self._queue.extend(pendings)
        self.queued_items += n
        self._observer.depth(self.queued_items)
        self._track(pendings, loop)
        self._wake()
        return pendings

    async def result(self, pendings: list[Pending]) -> tuple[np.ndarray, ...]:
        """Waits for the outputs of the requests put (504 past the timeout), joined in order."""
        try:
            results = [await p.future for p in pendings]
        except Timeout:
            self._observer.rejected("timeout")
            raise
        finally:
            for p in pendings:
                if not p.future.done():
                    p.future.cancel()  # one failed: skip the rest
                if p.future.cancelled():  # by us, or by the task's own cancellation (the client has gone)
                    self._release(p)
                else:
                    p.future.exception()  # marks a failure as retrieved
        if len(results) == 1:
            return results[0]
        return tuple(np.concatenate(parts) for parts in zip(*results))

    async def submit(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return await self.result(self.put(x))

    def _track(self, pendings: list[Pending], loop: asyncio.AbstractEventLoop) -> None:
        """Adds new chunks to the unanswered ones (dropping answered ones from the front) and arms the timer."""
        unanswered = self._unanswered
        while unanswered and unanswered[0].future.done():
            unanswered.popleft()
        unanswered.extend(pendings)
        if self._expiry is None:
            self._expiry = loop.call_at(unanswered[0].enqueued_at + self.config.timeout_s, self._expire)

    def _expire(self) -> None:
        """Fails every chunk older than the timeout with 504, then sets the timer for the oldest one left."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        timeout_s, unanswered = self.config.timeout_s, self._unanswered
        cutoff = loop.time() - timeout_s
        error = None
        while unanswered:
            p = unanswered[0]
            if not p.future.done():
                if p.enqueued_at > cutoff:
                    self._expiry = loop.call_at(p.enqueued_at + timeout_s, self._expire)
                    return
                error = error or Timeout(f"request waited longer than {timeout_s:g} s")
                p.future.set_exception(error)
                self._release(p)
            unanswered.popleft()

    def _release(self, p: Pending) -> None:
        """Stops counting p's rows not yet in a batch against the bound, when it is abandoned or expires while queued
        (the collector skips it later), so that requests nobody waits for never crowd out new ones."""
        if p.left:
            self.queued_items -= p.left
            p.taken = len(p.x)
            self._observer.depth(self.queued_items)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, timeout_s: float | None) -> None:
        """Until woken by new rows, by the activity settling (when timeout_s is given), or by the timeout."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        handle = None
        if timeout_s is not None:
            handle = loop.call_later(timeout_s, _resolve, waiter)
            self._activity.waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
                self._activity.waiters.discard(waiter)

    async def _run(self) -> None:
        while True:
            try:
                if not self._queue:
                    if self._closing:
                        return
                    await self._sleep(None)
                    continue
                await self._await_company()
                batch = self._take()
                if batch:
                    await self._dispatch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything; the batch's own errors are handled in _dispatch
                log.exception("collector %s: unexpected error", self.name)

    async def _await_company(self) -> None:
        """Lets the first queued item wait up to max_delay_s for more, but only while more are known to be coming."""
        deadline = self._queue[0].enqueued_at + self.config.max_delay_s
        loop = asyncio.get_running_loop()
        while self.queued_items < self.config.max_batch_size and self._activity.busy and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._sleep(remaining)

    def _take(self) -> list[tuple[Pending, int, int]]:
        """Up to max_batch_size rows as (request, start, stop) slices, skipping requests already answered.

        When everything waiting fits, it all goes, in arrival order. Otherwise the requests with the fewest rows left
        go first (ties by arrival), each giving as many rows as still fit: a lone image never waits behind the
        thousands of rows of bulk requests queued before it, and among bulk requests the one closest to done
        finishes first, as arrival order would have it. A large request waits only while smaller ones fill whole
        batches, and then at most its timeout (504).
        """
        waiting = [p for p in self._queue if p.left and not p.future.done()]
        room = self.config.max_batch_size
        if sum(p.left for p in waiting) > room:
            order = sorted(waiting, key=_rows_left)  # stable: ties keep arrival order
        else:
            order = waiting
        batch: list[tuple[Pending, int, int]] = []
        for p in order:
            if not room:
                break
            k = min(p.left, room)
            batch.append((p, p.taken, p.taken + k))
            p.taken += k
            room -= k
            self.queued_items -= k
        self._queue = deque(p for p in waiting if p.left)
        self._observer.depth(self.queued_items)
        return batch

    async def _dispatch(self, batch: list[tuple[Pending, int, int]]) -> None:
        now = asyncio.get_running_loop().time()
        rows = sum(stop - start for _, start, stop in batch)
        for p, start, _ in batch:
            if not start:
                self._observer.waited(now - p.enqueued_at)
                p.dispatched_at, p.batch_rows = now, rows
        span = None if tracing.tracer is None else tracing.batch_span(self.name, batch, rows)
        try:
            outputs, compute_s = await self._compute.run(self.fn, [p.x[start:stop] for p, start, stop in batch])
        except Exception:
            if span is not None:
                tracing.end_batch(span, failed=True)
            log.exception("batch of %d items on %s failed; its %d request(s) get 500", rows, self.name, len(batch))
            error = Internal("internal")
            for p, _, _ in batch:
                if not p.future.done():
                    p.future.set_exception(error)
                    self._release(p)
            return
        self._observer.batch(rows, compute_s)
        if span is not None:
            tracing.end_batch(span)
        per_item = compute_s / rows
        self._seconds_per_item = per_item if not self._seconds_per_item else 0.8 * self._seconds_per_item + 0.2 * per_item
        offset = 0
        for p, start, stop in batch:
            n = stop - start
            if not p.future.done():
                _deliver(p, start, stop, tuple(out[offset : offset + n] for out in outputs))
            offset += n


def _rows_left(p: Pending) -> int:
    return p.left


def _deliver(p: Pending, start: int, stop: int, part: tuple[np.ndarray, ...]) -> None:
    """Hands a slice's outputs to its request; a request spanning batches gets them joined once its last is back
    (batches of one queue run one after another, so its slices come back in order)."""
    if not start and stop == len(p.x):
        p.future.set_result(part)
        return
    if p.parts is None:
        p.parts = []
    p.parts.append(part)
    if stop == len(p.x):
        p.future.set_result(tuple(np.concatenate(parts) for parts in zip(*p.parts)))
        p.parts = None


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
