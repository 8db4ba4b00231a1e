"""The sans-IO core shared by `Client` and `AsyncClient`: it builds each operation's requests (split to the server's
per-request limit), names the parser of each reply (replies.py), and decides retries and waits. The two clients only
send requests and sleep, each in its own way; nothing here touches a socket or a clock it was not handed."""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from latentserve_client import inputs
from latentserve_client._version import __version__
from latentserve_client.errors import (
    BadReply,
    ClientTimeout,
    ConnectionFailed,
    InvalidArgument,
    InvalidInput,
    LatentServeError,
    NotConnected,
    PayloadTooLarge,
    Timeout,
    TransportError,
    Unavailable,
    from_reply,
)
from latentserve_client.replies import (
    Reply, join_images, join_posteriors, join_scores, read_images, read_json, read_posterior, read_scores,
)

# The service's default MAX_ITEMS_PER_REQUEST. A client starts here, unless told (the constructor, or `read_limits()`
# from /models' `limits`), and learns a smaller one from the `limit` the first 413 carries.
DEFAULT_MAX_ITEMS = 1024
DEFAULT_MAX_SCORE_WORK = 102_400  # the service's default bound on images x samples of one /score request
SEED_LIMIT = 2**63
USER_AGENT = f"latentserve-client/{__version__} httpx/{httpx.__version__}"


@dataclass(frozen=True)
class Retry:
    """When to try again. 503s and 429s wait for their Retry-After (at most `max_retry_after_s`); 504s, dropped connections
    and timeouts back off exponentially from `backoff_s`, doubling up to `max_backoff_s`, with jitter. Never more
    than `max_attempts` tries (a connection that could not even be opened does not count: nothing was sent), never
    past `deadline_s` from the first; other 4xx and 5xx are never retried."""

    max_attempts: int = 5
    deadline_s: float = 60.0
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 30.0


NO_RETRY = Retry(max_attempts=1)


@dataclass(frozen=True)
class Call:
    """One HTTP request and how to read its 2xx reply."""

    method: str
    path: str
    parse: Callable[[Reply], Any]
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The body, or a function making it: large bodies are serialised by the thread or task that sends them, when
    # it sends them, so that preparing one request overlaps waiting for another.
    content: bytes | Callable[[], bytes] | None = None
    items: int = 0  # rows it carries, to learn the limit from a 413 about bytes
    retry: bool = True

    def body(self) -> bytes | None:
        return self.content() if callable(self.content) else self.content


@dataclass(frozen=True)
class Plan:
    """The calls of one operation, sent with bounded concurrency, and how to join their results in order."""

    calls: list[Call]
    combine: Callable[[list[Any]], Any]


Planner = Callable[[], Plan]


def transport_error(exc: httpx.RequestError) -> LatentServeError:
    """httpx's exception as this package's: never a bare httpx error."""
    if isinstance(exc, httpx.DecodingError):  # a body its Content-Encoding does not describe
        return BadReply(f"the reply's body cannot be decoded ({exc})")
    if isinstance(exc, httpx.TimeoutException):
        return ClientTimeout(f"no reply within the timeout ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return NotConnected(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return ConnectionFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# The least time a retry must have left before the deadline: one started with less would only time out, and the
# caller would get ClientTimeout instead of the error that made it retry (a refused connection, a 503).
MIN_TRY_S = 0.05


class Attempts:
    """The retry decisions for one call: the time each try may take, as a whole, and the wait before the next."""

    def __init__(self, policy: Retry, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.policy, self.timeout_s, self.clock, self.rand = policy, timeout_s, clock, rand
        self.started = clock()
        self.count = 0
        self.counted = 0  # tries that reached the server (or may have): what max_attempts bounds
        self.ends = math.inf

    def next_timeout(self) -> float:
        """The timeout of the next try: the client's timeout, cut to what is left of the deadline. The try must be
        over, its whole reply read, by then (`check`): httpx's own timeout applies to each read, so a reply that
        trickles in a byte at a time would never end."""
        self.count += 1
        self.counted += 1
        timeout = max(0.001, min(self.timeout_s, self.policy.deadline_s - (self.clock() - self.started)))
        self.ends = self.clock() + timeout
        return timeout

    def check(self) -> None:
        """Raises ClientTimeout once the current try has run past its timeout."""
        if self.clock() > self.ends:
            raise ClientTimeout(f"the reply did not arrive in full within {self.timeout_s:g} s")

    def wait_s(self, error: LatentServeError) -> float:
        """Seconds to wait before trying again; raises `error` when it is not retried (a 4xx, a 500, attempts used
        up, or a wait that would leave less than MIN_TRY_S before the deadline)."""
        p = self.policy
        if isinstance(error, NotConnected) and p.max_attempts > 1:
            self.counted -= 1  # nothing was sent: retried up to the deadline, however many times
        if not isinstance(error, (Unavailable, Timeout, TransportError)) or self.counted >= p.max_attempts:
            raise error
        retry_after = error.retry_after if isinstance(error, Unavailable) else None
        if retry_after is not None:
            # As told, plus up to 10 % so that the clients a full queue turned away do not all return at once.
            delay = min(retry_after, p.max_retry_after_s) * (1.0 + 0.1 * self.rand())
        else:
            top = min(p.max_backoff_s, p.backoff_s * 2 ** (self.count - 1))
            delay = top * (0.5 + 0.5 * self.rand())  # "equal jitter": never less than half the step
        if self.clock() - self.started + delay + MIN_TRY_S >= p.deadline_s:
            raise error  # a try with less than MIN_TRY_S left would end in its own timeout, hiding this error
        return delay


def outcome(call: Call, reply: Reply) -> Any:
    """The parsed result of a 2xx reply (BadReply when it is not what it claims); the service's exception for any
    other."""
    if 200 <= reply.status < 300:
        try:
            return call.parse(reply)
        except BadReply:
            raise
        except Exception as exc:  # whatever a malformed body makes json, numpy or a key lookup raise
            raise BadReply(f"{call.method} {call.path} answered {reply.status} with a body that cannot be read "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})", status=reply.status) from exc
    raise from_reply(reply.status, reply.headers, reply.content)


def check_seed(seed: int | None) -> int | None:
    """A seed as the service takes it: None or an integer in [0, 2^63); anything else is refused before sending
    (the server would answer 422), never wrapped."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT):
        raise InvalidInput(f"seed must be an integer in [0, 2^63) or None, got {str(seed)[:32]}")
    return seed


def part_seed(seed: int | None, index: int) -> int | None:
    """The seed of part `index` of a split request: seed, seed + 1, ... (wrapping past 2^63 - 1) so a seeded call
    repeats exactly."""
    return None if seed is None else (seed + index) % SEED_LIMIT


class Core:
    """What a client knows (its server, key, defaults, the learned limit) and the plan of every operation."""

    def __init__(self, url: str, *, api_key: str | None, model: str | None, version: int | None, timeout_s: float,
                 retry: Retry, max_items_per_request: int | None, format: str) -> None:
        if format not in ("npy", "json"):
            raise InvalidArgument(f"format must be 'npy' or 'json', not {format!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
                math.isfinite(timeout_s) and timeout_s > 0):
            raise InvalidArgument(f"timeout must be a positive number of seconds, not {timeout_s!r}")
        if api_key is not None and not (api_key.isascii() and api_key.isprintable() and api_key == api_key.strip()):
            raise InvalidArgument("the API key must be printable ASCII without leading or trailing spaces (HTTP "
                                  "headers cannot carry anything else)")
        self.url = url.rstrip("/")
        self.model, self.version, self.timeout_s, self.retry, self.format = model, version, timeout_s, retry, format
        self.max_items = max_items_per_request or DEFAULT_MAX_ITEMS
        self.headers = {"User-Agent": USER_AGENT}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def attempts(self, call: Call) -> Attempts:
        return Attempts(self.retry if call.retry else NO_RETRY, self.timeout_s)

    def _params(self, model: str | None, version: int | None) -> dict[str, str]:
        """?model=&version=: the call's, else the client's. The client's version applies only to its own model."""
        model = model or self.model
        if version is None and model == self.model:
            version = self.version
        params = {"model": model} if model else {}
        if version is not None:
            params["version"] = str(int(version))
        return params

    def _spans(self, n: int) -> list[tuple[int, int]]:
        step = max(1, self.max_items)
        return [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]

    def _image_call(self, path: str, batch: inputs.ImageBatch, params: dict, fmt: str | None, parse, accept: bool,
                    extra: dict | None = None) -> Call:
        """A call carrying images: .npy with `extra` as query parameters, or JSON with `extra` in the body. A batch
        holding PNGs that only the server can decode (no Pillow here) goes as JSON."""
        if (fmt or self.format) == "npy" and batch.array is not None:
            query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (extra or {}).items()
                     if v is not None}
            headers = {"Content-Type": inputs.NPY, **({"Accept": inputs.NPY} if accept else {})}
            return Call("POST", path, parse, {**params, **query}, headers, batch.npy, len(batch))
        body = inputs.json_body({"images": batch.json_images(), **(extra or {})})
        return Call("POST", path, parse, params, {"Content-Type": inputs.JSON}, body, len(batch))

    # Each operation converts its inputs once and returns a planner: called again after a 413 taught a smaller
    # limit, it splits the same inputs anew.
    def encode(self, images: inputs.Images, model: str | None, version: int | None, fmt: str | None) -> Planner:
        batch, params = inputs.image_batch(images), self._params(model, version)
        return lambda: Plan([self._image_call("/encode", batch.slice(a, b), params, fmt, read_posterior, accept=False)
                             for a, b in self._spans(len(batch))], join_posteriors)

    def decode(self, latents, model: str | None, version: int | None, fmt: str | None) -> Planner:
        z, params = inputs.latents(latents), self._params(model, version)
        if (fmt or self.format) == "npy":
            headers, body = {"Content-Type": inputs.NPY, "Accept": inputs.NPY}, inputs.npy_bytes
        else:
            headers, body = {"Content-Type": inputs.JSON}, lambda rows: inputs.json_body({"latents": rows.tolist()})
        return lambda: Plan([Call("POST", "/decode", read_images, params, headers, functools.partial(body, z[a:b]),
                                  b - a) for a, b in self._spans(len(z))], join_images)

    def reconstruct(self, images: inputs.Images, sample: bool, seed: int | None, model: str | None,
                    version: int | None, fmt: str | None) -> Planner:
        batch, params, seed = inputs.image_batch(images), self._params(model, version), check_seed(seed)
        return lambda: Plan([self._image_call("/reconstruct", batch.slice(a, b), params, fmt, read_images, accept=True,
                                              extra={"sample": bool(sample), "seed": part_seed(seed, i)})
                             for i, (a, b) in enumerate(self._spans(len(batch)))], join_images)

    def sample(self, n: int, seed: int | None, digit: object, model: str | None, version: int | None,
               fmt: str | None) -> Planner:
        params, seed = self._params(model, version), check_seed(seed)
        headers = {"Content-Type": inputs.JSON, **({"Accept": inputs.NPY} if (fmt or self.format) == "npy" else {})}
        # n < 1 and a bad digit go to the server as they are, for the server's own error.
        given = {} if digit is None else {"digit": digit}
        return lambda: Plan([Call("POST", "/sample", read_images, params, headers, inputs.json_body(
            {"n": b - a if n > 0 else n, "seed": part_seed(seed, i), **given}), b - a)
                             for i, (a, b) in enumerate(self._spans(max(n, 0)))], join_images)

    def score(self, images: inputs.Images, samples: int | None, seed: int | None, model: str | None,
              version: int | None, fmt: str | None) -> Planner:
        """Split like encode, and also so that each part's images x samples stays within the service's bound. Every
        part carries the same seed: an image's draws depend only on the seed and the image."""
        batch, params, seed = inputs.image_batch(images), self._params(model, version), check_seed(seed)
        per_part = max(1, DEFAULT_MAX_SCORE_WORK // max(1, samples or 100))

        def plan() -> Plan:
            step = max(1, min(self.max_items, per_part))
            spans = [(a, min(a + step, len(batch))) for a in range(0, len(batch), step)] or [(0, 0)]
            return Plan([self._image_call("/score", batch.slice(a, b), params, fmt, read_scores, accept=False,
                                          extra={"samples": samples, "seed": seed}) for a, b in spans], join_scores)

        return plan

    def models(self) -> Call:
        return Call("GET", "/models", read_json)

    def model_detail(self, name: str) -> Call:
        return Call("GET", "/models/" + quote(name, safe=""), read_json)

    def ready(self) -> Call:
        return Call("GET", "/readyz", lambda reply: True, retry=False)

    def learn_limit(self, error: PayloadTooLarge, plan: Plan) -> bool:
        """Lowers the per-request limit from the `limit` a 413 carries (items, or bytes with the size that was sent);
        True when it did, so the operation is worth planning again."""
        largest = max((c.items for c in plan.calls), default=0)
        limit = _items_within(error.limit or {}, largest)
        if limit is None or not 1 <= limit < largest:
            return False
        self.max_items = limit
        return True

    def read_limits(self, listing: dict) -> int:
        """Takes the per-request item limit from /models' `limits` (kept when the listing has none)."""
        value = (listing.get("limits") or {}).get("max_items_per_request")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            self.max_items = value
        return self.max_items

    def ready_wait_s(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> float:
        """The pause before the next /readyz poll of wait_ready; raises ClientTimeout once the deadline is past."""
        left = deadline - clock()
        if left <= 0:
            raise ClientTimeout(f"{self.url} was not ready in time")
        return min(0.2, left)


def _items_within(limit: dict, largest: int) -> int | None:
    """Items per request that fit a 413's limit: its value for the item limit; for the byte limit, the largest
    request's rows scaled by allowed / sent bytes, with 5 % to spare (a body's size is about proportional to its
    rows). None when the limit says neither."""
    value, got = limit.get("value"), limit.get("got")
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if limit.get("name") == "max_items_per_request":
        return value
    if limit.get("name") == "max_body_bytes" and isinstance(got, int) and got > 0 and largest >= 2:
        return int(largest * value / got * 0.95)
    return None
