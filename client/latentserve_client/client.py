"""`Client` (blocking, httpx.Client, a thread pool for split requests) and `AsyncClient` (asyncio, httpx.AsyncClient,
a semaphore): the two transports. Everything else, requests, splitting, replies, errors and retry decisions, is the
shared core's (_core.py); a transport only sends, sleeps, and runs a plan's calls with bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import httpx
import numpy as np

from latentserve_client._core import Attempts, Call, Core, Planner, Retry, outcome, transport_error
from latentserve_client.errors import ClientTimeout, LatentServeError, PayloadTooLarge, TransportError, Unavailable
from latentserve_client.replies import Scores
from latentserve_client.inputs import Images
from latentserve_client.replies import Posterior, Reply

DEFAULT_URL = "http://127.0.0.1:8000"


class _Base:
    """The constructor both clients share; see `Client` for what each argument does."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, model: str | None = None,
                 version: int | None = None, timeout: float = 30.0, retry: Retry | None = None,
                 max_concurrency: int = 4, max_items_per_request: int | None = None, format: str = "npy") -> None:
        self._core = Core(url, api_key=api_key, model=model, version=version, timeout_s=timeout,
                          retry=retry or Retry(), max_items_per_request=max_items_per_request, format=format)
        self.max_concurrency = max(1, int(max_concurrency))
        n = self.max_concurrency
        self._limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def max_items_per_request(self) -> int:
        """Most items sent in one request: the constructor's value, 1024 by default, what `read_limits()` read, or
        what a 413 taught."""
        return self._core.max_items


class Client(_Base):
    """A blocking client of one latentserve server.

    `Client(url, api_key=..., model="vae", version=2)` pins every call to vae version 2 unless a call names its own
    `model=` / `version=`. `timeout` bounds each attempt in seconds; `retry` (a `Retry`) bounds attempts and the
    overall deadline. Inputs larger than `max_items_per_request` are split into requests sent `max_concurrency` at a
    time and joined in order. `format` is "npy" (binary .npy bodies, the fast path) or "json".
    """

    def __init__(self, url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._http = httpx.Client(base_url=self._core.url, headers=self._core.headers, limits=self._limits)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def encode(self, images: Images, *, model: str | None = None, version: int | None = None,
               format: str | None = None) -> Posterior:
        """The posterior of each image: `.mean` and `.scale` (N, K), `.model` and `.version` that answered."""
        return self._run(self._core.encode(images, model, version, format))

    def decode(self, latents: Any, *, model: str | None = None, version: int | None = None,
               format: str | None = None) -> np.ndarray:
        """Pixel means (N, 28, 28) in [0, 1] of latent codes (N, K) or one code (K,); like every image result, an
        ndarray that also has `.model` and `.version` (ServedImages)."""
        return self._run(self._core.decode(latents, model, version, format))

    def reconstruct(self, images: Images, sample: bool = False, seed: int | None = None, *, model: str | None = None,
                    version: int | None = None, format: str | None = None) -> np.ndarray:
        """Images (N, 28, 28) through the posterior (its mean, or a draw when `sample`) and back."""
        return self._run(self._core.reconstruct(images, sample, seed, model, version, format))

    def sample(self, n: int, seed: int | None = None, digit: int | None = None, *, model: str | None = None,
               version: int | None = None, format: str | None = None) -> np.ndarray:
        """`n` draws from the prior, decoded: (n, 28, 28); with `digit` (0-9), draws of that digit (served by the
        cvae when no model is named and it is loaded). The same seed gives the same digits."""
        return self._run(self._core.sample(n, seed, digit, model, version, format))

    def score(self, images: Images, samples: int | None = None, seed: int | None = None, *, model: str | None = None,
              version: int | None = None, format: str | None = None) -> Scores:
        """How likely each image is, its percentile among the version's reference set and an outlier verdict
        (`POST /score`; docs/score.md says what the numbers mean). Split like encode, and so that each request's
        images x samples stays within the service's bound; an image's estimate does not depend on the split."""
        return self._run(self._core.score(images, samples, seed, model, version, format))

    def models(self) -> dict:
        """GET /models: the loaded models, their versions and the default model."""
        return self._send(self._core.models())

    def model(self, name: str) -> dict:
        """GET /models/{name}: the manifest of each loaded version of one model."""
        return self._send(self._core.model_detail(name))

    def read_limits(self) -> int:
        """Takes the server's per-request item limit from /models' `limits` (so that no request meets a 413 first);
        returns `max_items_per_request`."""
        return self._core.read_limits(self.models())

    def ready(self) -> bool:
        """Whether the server answers /readyz with 200 (models loaded and warm); False if it is down or not ready."""
        try:
            return self._send(self._core.ready())
        except (Unavailable, TransportError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Polls /readyz until the server is ready; raises ClientTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            time.sleep(self._core.ready_wait_s(deadline))

    def _send(self, call: Call) -> Any:
        attempts = self._core.attempts(call)
        while True:
            try:
                with self._http.stream(call.method, call.path, params=call.params, headers=call.headers,
                                       content=call.body(), timeout=attempts.next_timeout()) as r:
                    content = self._read(r, attempts)
                return outcome(call, Reply(r.status_code, r.headers, content))
            except httpx.RequestError as exc:
                error: LatentServeError = transport_error(exc)
                error.__cause__ = exc
            except LatentServeError as exc:
                error = exc
            time.sleep(attempts.wait_s(error))

    @staticmethod
    def _read(r: httpx.Response, attempts: Attempts) -> bytes:
        """The body, checked against the try's timeout after each chunk: a reply trickling in is cut off at most one
        read past it (each read is bounded by the timeout too)."""
        chunks = []
        for chunk in r.iter_bytes():
            attempts.check()
            chunks.append(chunk)
        return b"".join(chunks)

    def _map(self, calls: list[Call]) -> list[Any]:
        if len(calls) == 1 or self.max_concurrency == 1:
            return [self._send(call) for call in calls]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="latentserve-client")
        futures = [self._pool.submit(self._send, call) for call in calls]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def _run(self, planner: Planner) -> Any:
        plan = planner()
        try:
            return plan.combine(self._map(plan.calls))
        except PayloadTooLarge as exc:
            if not self._core.learn_limit(exc, plan):
                raise
        plan = planner()
        return plan.combine(self._map(plan.calls))


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same constructor and methods, each a coroutine."""

    def __init__(self, url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self._core.url, headers=self._core.headers, limits=self._limits)
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def encode(self, images: Images, *, model: str | None = None, version: int | None = None,
                     format: str | None = None) -> Posterior:
        return await self._run(self._core.encode(images, model, version, format))

    async def decode(self, latents: Any, *, model: str | None = None, version: int | None = None,
                     format: str | None = None) -> np.ndarray:
        return await self._run(self._core.decode(latents, model, version, format))

    async def reconstruct(self, images: Images, sample: bool = False, seed: int | None = None, *,
                          model: str | None = None, version: int | None = None,
                          format: str | None = None) -> np.ndarray:
        return await self._run(self._core.reconstruct(images, sample, seed, model, version, format))

    async def sample(self, n: int, seed: int | None = None, digit: int | None = None, *, model: str | None = None,
                     version: int | None = None, format: str | None = None) -> np.ndarray:
        """`n` draws from the prior (or of `digit`, 0-9), decoded: (n, 28, 28)."""
        return await self._run(self._core.sample(n, seed, digit, model, version, format))

    async def score(self, images: Images, samples: int | None = None, seed: int | None = None, *,
                    model: str | None = None, version: int | None = None, format: str | None = None) -> Scores:
        return await self._run(self._core.score(images, samples, seed, model, version, format))

    async def models(self) -> dict:
        return await self._send(self._core.models())

    async def model(self, name: str) -> dict:
        return await self._send(self._core.model_detail(name))

    async def read_limits(self) -> int:
        return self._core.read_limits(await self.models())

    async def ready(self) -> bool:
        try:
            return await self._send(self._core.ready())
        except (Unavailable, TransportError):
            return False

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.ready():
            await asyncio.sleep(self._core.ready_wait_s(deadline))

    async def _send(self, call: Call) -> Any:
        attempts = self._core.attempts(call)
        while True:
            try:
                timeout = attempts.next_timeout()
                try:
                    async with asyncio.timeout(timeout):  # the whole try, however slowly its reply trickles in
                        r = await self._http.request(call.method, call.path, params=call.params,
                                                     headers=call.headers, content=call.body(), timeout=timeout)
                except TimeoutError:
                    raise ClientTimeout(f"the reply did not arrive in full within {timeout:g} s") from None
                return outcome(call, Reply(r.status_code, r.headers, r.content))
            except httpx.RequestError as exc:
                error: LatentServeError = transport_error(exc)
                error.__cause__ = exc
            except LatentServeError as exc:
                error = exc
            await asyncio.sleep(attempts.wait_s(error))

    async def _bounded(self, call: Call) -> Any:
        async with self._slots:
            return await self._send(call)

    async def _map(self, calls: list[Call]) -> list[Any]:
        if len(calls) == 1:
            return [await self._send(calls[0])]
        tasks = [asyncio.ensure_future(self._bounded(call)) for call in calls]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def _run(self, planner: Planner) -> Any:
        plan = planner()
        try:
            return plan.combine(await self._map(plan.calls))
        except PayloadTooLarge as exc:
            if not self._core.learn_limit(exc, plan):
                raise
        plan = planner()
        return plan.combine(await self._map(plan.calls))
