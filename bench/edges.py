"""The soak's hostile traffic (issue 9), run beside its workers: stalled uploads (each must get 408 and lose its
connection), hang-ups mid-upload (499s, never 5xx), bursts of bulk JSON bodies (each answered 200 or 503, RSS
tracked), bulk .npy clients beside the single-image ones, and hostile artifacts dropped into the scratch copy before
reloads (a folder named with a non-ASCII digit, a version whose manifest claims latent_dim 30000): each reload must
answer 200 and the service keep serving."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import lvm
from bench.bodies import max_json_body, mnist_test_images, npy_bytes

NPY = "application/x-npy"
BODY_TIMEOUT_S = 2.0  # the soak server's LATENTSERVE_BODY_TIMEOUT_S: stalled uploads end quickly
BODY_BUDGET_BYTES = 32 * 1024 * 1024  # its LATENTSERVE_MAX_INFLIGHT_BODY_BYTES: a burst overflows it
BURST = 24  # bodies per burst: 24 x 1.9 MiB overflows the 32 MiB budget, so some must get 503


@dataclass
class EdgeStats:
    outcomes: Counter = field(default_factory=Counter)  # (kind, outcome)
    unexpected: Counter = field(default_factory=Counter)
    bursts: list[dict] = field(default_factory=list)

    def record(self, kind: str, outcome: str | int, allowed: set) -> None:
        self.outcomes[(kind, str(outcome))] += 1
        if outcome not in allowed:
            self.unexpected[(kind, str(outcome))] += 1


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _partial_upload(url: str, api_key: str, body: bytes, sent: int) -> tuple[asyncio.StreamReader,
                                                                                  asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*_address(url))
    writer.write(b"POST /encode HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                 + api_key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:sent])
    await writer.drain()
    return reader, writer


async def stalled_uploads(url: str, api_key: str, deadline: float, stats: EdgeStats, every_s: float = 1.0) -> None:
    """One upload at a time sends half its body and stalls; the server must answer 408 and close the connection
    within the body timeout (plus slack for a loaded machine)."""
    body = json.dumps({"images": [[0.5] * 784]}).encode()
    while time.monotonic() < deadline:
        try:
            reader, writer = await _partial_upload(url, api_key, body, len(body) // 2)
            reply = await asyncio.wait_for(reader.read(), BODY_TIMEOUT_S + 10)  # EOF: the server closed it
            writer.close()
            outcome = int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else "no reply"
            if outcome == 408 and b"connection: close" not in reply.lower():
                outcome = "408 without connection: close"
        except (TimeoutError, OSError) as exc:
            outcome = type(exc).__name__
        stats.record("stalled upload", outcome, {408})
        await asyncio.sleep(every_s)


async def hang_ups(url: str, api_key: str, deadline: float, stats: EdgeStats, every_s: float = 0.5) -> int:
    """Clients that vanish mid-upload (no answer to check here: /metrics must show 499s and no 500)."""
    body = max_json_body(8)
    n = 0
    while time.monotonic() < deadline:
        try:
            _, writer = await _partial_upload(url, api_key, body, len(body) // 3)
            await asyncio.sleep(0.05)
            writer.transport.abort()
            n += 1
        except OSError as exc:
            stats.record("hang-up", type(exc).__name__, set())
        await asyncio.sleep(every_s)
    stats.outcomes[("hang-up", "sent")] = n
    return n


async def bulk_bursts(client: httpx.AsyncClient, auth: dict, deadline: float, stats: EdgeStats, rss, every_s: float,
                      log) -> None:
    """Every every_s, BURST concurrent ~1.9 MiB JSON bodies (128 images) at once; RSS before, at peak, after."""
    body = max_json_body(128)
    headers = {"content-type": "application/json", **auth}

    async def one() -> int | str:
        try:
            return (await client.post("/encode", content=body, headers=headers)).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    while True:
        await asyncio.sleep(every_s)
        if time.monotonic() >= deadline:
            return
        before = rss()
        answers = await asyncio.gather(*(one() for _ in range(BURST)))
        after = rss()
        for status in answers:
            stats.record("bulk JSON burst", status, {200, 503})
        stats.bursts.append({"statuses": dict(Counter(map(str, answers))), "rss_before_mib": before / 2**20,
                             "rss_after_mib": after / 2**20})
        log(f"[soak] burst of {BURST} bulk JSON bodies: {dict(Counter(answers))}, RSS {before / 2**20:.0f} -> "
            f"{after / 2**20:.0f} MiB")


async def bulk_npy_client(client: httpx.AsyncClient, auth: dict, deadline: float, stats: EdgeStats) -> None:
    """A client sending 1,024-image .npy /encode bodies back to back, beside the single-image workers."""
    body = npy_bytes(mnist_test_images(1024)[0])
    headers = {"content-type": NPY, **auth}
    while time.monotonic() < deadline:
        try:
            status = (await client.post("/encode", content=body, headers=headers)).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        stats.record("bulk .npy", status, {200, 503})


class VersionDrops:
    """Each call adds a version folder to the scratch artifacts' vae (made by `_add` from the newest one), or removes
    the one it added last time: what the soak does between reloads."""

    label = "vae"

    def __init__(self, root: Path) -> None:
        self.vae = root / "vae"
        self.added: Path | None = None

    def step(self) -> str:
        if self.added is not None:
            shutil.rmtree(self.added)
            done, self.added = f"removed vae/{self.added.name}", None
            return done
        versions = sorted(v for p in self.vae.iterdir() if (v := lvm.parse_version(p.name)) is not None)
        self.added = self._add(versions[-1])
        return f"added {self.label}/{self.added.name}"

    def _add(self, newest: int) -> Path:
        raise NotImplementedError


class HostileArtifacts(VersionDrops):
    """Before a reload, drops one hostile thing into the scratch artifacts, or removes it again: a copy of the newest
    vae under a folder named '²' (a non-ASCII digit), or a version whose manifest says latent_dim 30000."""

    label = "hostile vae"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.turn = 0

    def _add(self, newest: int) -> Path:
        src = self.vae / str(newest)
        self.turn += 1
        if self.turn % 2:
            dst = self.vae / "²"
            shutil.copytree(src, dst)
        else:
            dst = self.vae / "900"
            shutil.copytree(src, dst)
            manifest = json.loads((dst / "manifest.json").read_text())
            manifest.update(version=900, latent_dim=30000)
            (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return dst


def metrics_5xx(text: str) -> Counter:
    """latentserve_requests_total by 5xx status, from a /metrics scrape."""
    counts = Counter()
    for line in text.splitlines():
        if line.startswith("latentserve_requests_total{") and 'status="5' in line:
            status = line.split('status="', 1)[1][:3]
            counts[status] += int(float(line.rsplit(" ", 1)[1]))
    return counts
