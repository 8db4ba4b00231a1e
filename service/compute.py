"""Where batches run: one compute thread per device, and the `Activity` that tells collectors whether more work is
on its way (requests whose body is in being parsed, batches computing), so that a lone request never waits for
company."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("service.compute")


class Activity:
    """Work known to be on its way: requests being parsed (`arriving`) and batches in a compute thread
    (`computing`). A collector waits for company only while this is busy, so a lone request is dispatched at once.
    A request still receiving its body is not counted: it may never finish (a stalled upload), and counting it made
    every lone request wait the full batch delay.
    """

    def __init__(self) -> None:
        self.arriving = 0
        self.computing = 0
        self.waiters: set[asyncio.Future] = set()

    @property
    def busy(self) -> bool:
        return self.arriving > 0 or self.computing > 0

    def arrival(self) -> _Arrival:
        """`with activity.arrival():` around a handler from the end of its body until its rows are queued (or it
        failed)."""
        return _Arrival(self)

    def notify(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Arrival:
    """A class, not @contextmanager: this runs on every request."""

    __slots__ = ("_activity",)

    def __init__(self, activity: Activity) -> None:
        self._activity = activity

    def __enter__(self) -> None:
        self._activity.arriving += 1

    def __exit__(self, *exc: object) -> None:
        activity = self._activity
        activity.arriving -= 1
        if not activity.arriving and not activity.computing:
            activity.notify()


class ComputeThread:
    """The one thread that runs forward passes on a device, so torch never runs on the event loop.

    A bare thread and queue rather than a ThreadPoolExecutor: half the hand-off cost (BENCHMARKS.md, "Figures
    behind"), which a lone request pays in full.
    """

    _STOP = object()

    def __init__(
        self, activity: Activity, name: str = "compute", initializer: Callable[[], None] | None = None
    ) -> None:
        self._activity = activity
        self._initializer = initializer
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable, *args: object) -> tuple[object, float]:
        """fn(*args) in the thread, and its duration in seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._activity.computing += 1
        try:
            self._jobs.put((loop, future, fn, args))
            return await future
        finally:
            self._activity.computing -= 1
            if not self._activity.busy:
                self._activity.notify()

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()  # per-thread state (the FPU's denormal mode) is set where the work runs
            except Exception:  # a failed tweak must not leave every job waiting on a dead thread
                log.exception("compute thread %s: initializer failed; running without it", self._thread.name)
        while True:
            job = self._jobs.get()
            if job is self._STOP:
                return
            loop, future, fn, args = job
            try:
                start = time.perf_counter()
                result = (fn(*args), time.perf_counter() - start)
                error = None
            except BaseException as exc:  # handed to the awaiting coroutine, never lost in this thread
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def shutdown(self) -> None:
        """Stops the thread after the jobs already queued."""
        self._jobs.put(self._STOP)
        self._thread.join()


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
