"""A scripted stand-in for the service, for retry tests: a raw asyncio HTTP/1.1 server on a free loopback port, in
its own thread, that answers each request with the next step of its script (the last step repeats) and records
when each request arrived. A step is a reply, "drop" (close the connection without answering), "hang", or "trickle"
(headers of a 200, then one byte of its body every 0.2 s for 10 s)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Self

POSTERIOR = {"model": "vae", "version": 1, "mean": [[0.0, 0.0]], "scale": [[1.0, 1.0]]}
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def ok(body: dict = POSTERIOR) -> Step:
    return Step(200, json.dumps(body).encode())


def error(status: int, type_: str, detail: str = "scripted", **headers: str) -> Step:
    return Step(status, json.dumps({"detail": detail, "type": type_}).encode(), headers)


def overloaded(retry_after: str) -> Step:
    return error(503, "overloaded", "queue full; retry later", **{"Retry-After": retry_after})


class StandIn:
    def __init__(self, *script: Step | str) -> None:
        self.script = list(script)
        self.arrivals: list[float] = []
        self.headers: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def shut() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def gaps(self) -> list[float]:
        """Seconds between consecutive arrivals."""
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.arrivals.append(time.monotonic())
            self.headers.append(head)
            step = self.script[min(len(self.arrivals), len(self.script)) - 1]
            if step == "hang":
                await asyncio.sleep(30)
            elif step == "trickle":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
                for _ in range(50):
                    await writer.drain()
                    await asyncio.sleep(0.2)
                    writer.write(b" ")
            elif step != "drop":
                extra = "".join(f"{k}: {v}\r\n" for k, v in step.headers.items())
                writer.write(f"HTTP/1.1 {step.status} X\r\ncontent-type: {step.content_type}\r\ncontent-length: "
                             f"{len(step.body)}\r\nconnection: close\r\n{extra}\r\n".encode() + step.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
