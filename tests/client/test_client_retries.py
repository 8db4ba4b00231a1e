"""Retries against a scripted stand-in server (tests/client/stand_in.py): a 503 waits for its Retry-After (capped),
504s and dropped connections back off exponentially, attempts and the deadline bound it all, and no 4xx (or 500)
is ever sent twice. Both clients run the same core; each behaviour is checked through both."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from latentserve_client import (
    AsyncClient,
    BadReply,
    Client,
    ClientTimeout,
    ConnectionFailed,
    InvalidArgument,
    InvalidInput,
    NotConnected,
    Overloaded,
    Retry,
    ServiceError,
    Timeout,
    __version__,
)

from tests.client.stand_in import StandIn, Step, error, ok, overloaded
from tests.helpers import free_port

pytestmark = pytest.mark.slow  # real sockets and real waits (Retry-After of a second, deadlines of seconds)
X = np.zeros((1, 784), np.uint8)
FAST = Retry(max_attempts=5, deadline_s=10.0, backoff_s=0.01, max_backoff_s=0.05)
KINDS = ["sync", "async"]


def encode(kind: str, url: str, **client_kw):
    """Client(url).encode(X) or the same through AsyncClient; returns (posterior, seconds taken)."""
    start = time.monotonic()
    if kind == "sync":
        with Client(url, **client_kw) as client:
            return client.encode(X), time.monotonic() - start

    async def go():
        async with AsyncClient(url, **client_kw) as client:
            return await client.encode(X)

    return asyncio.run(go()), time.monotonic() - start


def sample(kind: str, url: str, **client_kw):
    if kind == "sync":
        with Client(url, **client_kw) as client:
            return client.sample(1)

    async def go():
        async with AsyncClient(url, **client_kw) as client:
            return await client.sample(1)

    return asyncio.run(go())


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_a_503_waits_for_its_retry_after(kind):
    with StandIn(overloaded("1"), ok()) as server:
        posterior, _ = encode(kind, server.url, retry=FAST)
    assert posterior.model == "vae" and len(server.arrivals) == 2
    assert 1.0 <= server.gaps()[0] < 1.6  # as told, plus at most 10 % jitter (and this machine's slack)


def test_retry_after_is_capped_and_http_dates_are_read():
    with StandIn(overloaded("3600"), overloaded("Wed, 21 Oct 2015 07:28:00 GMT"), ok()) as server:
        encode("sync", server.url, retry=Retry(max_retry_after_s=0.2, deadline_s=10))
    first, second = server.gaps()
    assert 0.2 <= first < 0.7  # an hour, capped at 0.2 s
    assert second < 0.5  # a date in the past: retry now


@pytest.mark.parametrize("kind", KINDS)
def test_504s_back_off_exponentially_with_jitter(kind):
    with StandIn(error(504, "timeout"), error(504, "timeout"), error(504, "timeout"), ok()) as server:
        encode(kind, server.url, retry=Retry(backoff_s=0.2, max_backoff_s=5.0, deadline_s=10))
    g1, g2, g3 = server.gaps()
    # Equal jitter: step k waits between half and all of 0.2 * 2^(k-1) s.
    assert 0.1 <= g1 and 0.2 <= g2 and 0.4 <= g3
    assert g1 + g2 + g3 < 1.4 + 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_dropped_connections_are_retried(kind):
    with StandIn("drop", "drop", ok()) as server:
        posterior, _ = encode(kind, server.url, retry=FAST)
    assert posterior.version == 1 and len(server.arrivals) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_the_client_gives_up_at_its_deadline(kind):
    with StandIn(overloaded("1")) as server:
        with pytest.raises(Overloaded) as err:
            encode(kind, server.url, retry=Retry(max_attempts=100, deadline_s=2.5))
        elapsed = time.monotonic() - server.arrivals[0]
    # Tries at about 0, 1 and 2 s; a fourth would start past 2.5 s, so the last 503 is raised at once.
    assert err.value.retry_after == 1.0 and err.value.status == 503 and "queue full" in err.value.detail
    assert 2 <= len(server.arrivals) <= 3 and elapsed < 2.5 + 0.5  # 0.5 s: this shared machine's slack


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", [
    error(422, "invalid_input", "expected 784 pixels"), error(401, "unauthorized"), error(404, "unknown_model"),
    error(408, "request_timeout"), error(413, "payload_too_large", "too big"), error(500, "internal"),
    Step(502, b"<html>bad gateway</html>", content_type="text/html"),
], ids=lambda s: str(s.status))
def test_4xx_and_500_are_never_retried(kind, step):
    with StandIn(step, ok()) as server, pytest.raises(ServiceError) as err:
        encode(kind, server.url, retry=FAST)
    assert len(server.arrivals) == 1
    assert err.value.status == step.status
    if step.status == 422:
        assert isinstance(err.value, InvalidInput) and err.value.detail == "expected 784 pixels"
    if step.status == 502:  # not the service's error body: mapped by status, the body's text as detail
        assert err.value.detail == "<html>bad gateway</html>"


@pytest.mark.parametrize("kind", KINDS)
def test_attempts_are_bounded(kind):
    with StandIn(error(504, "timeout", "waited too long")) as server, pytest.raises(Timeout) as err:
        encode(kind, server.url, retry=Retry(max_attempts=3, backoff_s=0.01))
    assert len(server.arrivals) == 3 and err.value.detail == "waited too long"


@pytest.mark.parametrize("kind", KINDS)
def test_no_server_raises_connection_failed_not_an_httpx_error(kind):
    with pytest.raises(ConnectionFailed) as err:
        encode(kind, f"http://127.0.0.1:{free_port()}", retry=Retry(deadline_s=0.3, backoff_s=0.01))
    assert err.value.status is None and "ConnectError" in err.value.detail


def test_a_silent_server_raises_client_timeout():
    with StandIn("hang") as server, pytest.raises(ClientTimeout):
        encode("sync", server.url, timeout=0.3, retry=Retry(max_attempts=2, backoff_s=0.01))
    assert len(server.arrivals) == 2  # a timeout is retried like a dropped connection


def test_requests_carry_the_user_agent_and_the_key():
    with StandIn(ok()) as server:
        encode("sync", server.url, api_key="secret")
    head = server.headers[0].decode().lower()
    assert f"user-agent: latentserve-client/{__version__}" in head and "authorization: bearer secret" in head


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickling_reply_is_cut_off_at_the_timeout(kind):
    # httpx's timeout bounds each read, and a byte every 0.2 s kept a try alive for as long as the server liked.
    with StandIn("trickle") as server, pytest.raises(ClientTimeout):
        encode(kind, server.url, timeout=0.5, retry=Retry(max_attempts=2, backoff_s=0.01))
    elapsed = time.monotonic() - server.arrivals[0]
    assert len(server.arrivals) == 2 and elapsed < 2 * (0.5 + 0.2) + 0.5  # two tries, a read of slack each


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_a_senseless_retry_after_backs_off_instead_of_retrying_at_once(kind, value):
    with StandIn(overloaded(value), ok()) as server:
        encode(kind, server.url, retry=Retry(backoff_s=0.4, deadline_s=10))
    assert server.gaps()[0] >= 0.2  # half the first backoff step at least; it was 0 s


@pytest.mark.parametrize("kind", KINDS)
def test_refused_connections_are_retried_up_to_the_deadline(kind):
    # A restarting server refuses connections for seconds; max_attempts counts tries that reached it.
    start = time.monotonic()
    with pytest.raises(NotConnected):
        encode(kind, f"http://127.0.0.1:{free_port()}", retry=Retry(max_attempts=2, deadline_s=1.0, backoff_s=0.05,
                                                                      max_backoff_s=0.1))
    assert 0.8 <= time.monotonic() - start < 1.0 + 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", [
    Step(200, b"<html>hello</html>", content_type="text/html"),
    Step(200, b'{"model": "vae"}'),
    Step(200, b'{"model": "vae", "version": "1", "mean": [[0, 0]], "scale": null}'),
    Step(200, b'{"model": "vae", "version": 1, "mean": [0, 0], "scale": null}'),
    Step(200, b"\x93NUMPY nonsense", content_type="application/x-npy", headers={"X-Model": "vae",
                                                                                  "X-Model-Version": "1"}),
    Step(200, npy_bytes(np.zeros((1, 784), np.float32)), content_type="application/x-npy",
         headers={"X-Model": "vae"}),
    Step(200, npy_bytes(np.zeros((1, 784), np.float32)), content_type="application/x-npy",
         headers={"X-Model": "vae", "X-Model-Version": "one"}),
    Step(200, npy_bytes(np.zeros((1, 5), np.float32)), content_type="application/x-npy",
         headers={"X-Model": "vae", "X-Model-Version": "1"}),
    Step(200, npy_bytes(np.array([{"a": 1}], object), allow_pickle=True), content_type="application/x-npy",
         headers={"X-Model": "vae", "X-Model-Version": "1"}),
], ids=["html", "no keys", "version a string", "mean not 2-D", "bad npy", "no version header",
        "version not a number", "wrong shape", "pickled npy"])
def test_a_2xx_reply_that_is_not_what_it_claims_raises_bad_reply(kind, step):
    with StandIn(step) as server, pytest.raises(BadReply) as err:
        if step.content_type == "application/x-npy":
            sample(kind, server.url, retry=FAST)
        else:
            encode(kind, server.url, retry=FAST)
    assert len(server.arrivals) == 1 and err.value.status == 200


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_out_of_range_seeds_are_refused_before_sending(seed):
    with StandIn(ok()) as server, Client(server.url) as client:
        for call in (lambda: client.sample(2, seed=seed), lambda: client.reconstruct(X, True, seed=seed)):
            with pytest.raises(InvalidInput, match=r"seed must be an integer in \[0, 2\^63\)"):
                call()
    assert server.arrivals == []  # it was wrapped modulo 2^63 and sent


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")},
                                    {"api_key": "clé"}, {"api_key": " key"}, {"format": "xml"}])
def test_arguments_that_can_never_work_are_refused_at_construction(kwargs):
    with pytest.raises(InvalidArgument):
        Client("http://127.0.0.1:1", **kwargs)
