"""Starts an ASGI app under uvicorn as a pinned subprocess, waits for /readyz, reads its RSS and CPU, stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.machine import CoreSplit

REPO = Path(__file__).resolve().parent.parent
KEEP_ALIVE_S = 5  # uvicorn's default idle timeout, named so that the load generators can stay under it
# A pooled client must drop an idle connection well before the server closes it: with both at the same expiry, a
# request sent as the server's timer fires meets a closing socket (httpx ReadError; see docs/edges.md).
CLIENT_KEEPALIVE_EXPIRY_S = KEEP_ALIVE_S / 2
# The same uvicorn settings for the service and the floor, so only the app differs.
UVICORN_FLAGS = ["--workers", "1", "--no-access-log", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                 "--timeout-keep-alive", str(KEEP_ALIVE_S)]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One uvicorn process serving `app` ("module:attr") on 127.0.0.1, with `env` added to the environment."""

    app: str
    cores: CoreSplit
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    startup_timeout_s: float = 120.0
    log_path: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self.port = self.port or free_port()
        env = {**os.environ, **self.env}
        if self.cores.pinned:
            # Torch sizes its thread pool from the machine, not the affinity mask: give it the cores it is pinned to.
            n = str(len(self.cores.server))
            env.setdefault("OMP_NUM_THREADS", n)
            env.setdefault("MKL_NUM_THREADS", n)
        env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
        cmd = [*self.cores.taskset("server"), sys.executable, "-m", "uvicorn", self.app,
               "--host", "127.0.0.1", "--port", str(self.port), *UVICORN_FLAGS]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        if self.log_path:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.proc.returncode} before it was ready"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.app} not ready after {self.startup_timeout_s:.0f} s")

    def rss_bytes(self) -> int:
        """VmRSS of the server process (uvicorn runs the app in-process with one worker)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it will not go; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
