"""What the image and Compose checks share: the container engine (docker where it answers, else podman), its Compose
command, commands run with a time bound, HTTP polling on 127.0.0.1, and the list of checks and figures they report."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
APP_PORT = 8000  # the port the image listens on (Dockerfile EXPOSE, LATENTSERVE_PORT)


def sh(argv: list[str], timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Runs argv with captured text output; a failure raises with the command's own words."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"`{shlex.join(argv)}` exited {result.returncode}:\n{output}")
    return result


def _answers(argv: list[str]) -> bool:
    try:
        return shutil.which(argv[0]) is not None and sh(argv, timeout=60, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass(frozen=True)
class Engine:
    """`docker` or `podman`, and the Compose command that drives it."""

    name: str

    @classmethod
    def find(cls) -> Engine:
        if _answers(["docker", "info"]):
            return cls("docker")
        if shutil.which("podman"):
            return cls("podman")
        raise SystemExit("image check: neither `docker` (with a running daemon) nor `podman` is installed")

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return sh([self.name, *args], timeout=timeout, check=check)

    def build_flags(self, extra: str) -> list[str]:
        # Podman's default OCI format drops HEALTHCHECK; the Docker format keeps it (Docker only writes that one).
        return (["--format", "docker"] if self.name == "podman" else []) + shlex.split(extra)

    def compose(self) -> list[str]:
        if self.name == "docker" and _answers(["docker", "compose", "version"]):
            return ["docker", "compose"]
        beside = Path(sys.executable).parent / "podman-compose"
        found = str(beside) if beside.is_file() else shutil.which("podman-compose")
        if found is None:
            raise SystemExit("image check: no `docker compose`; install podman-compose >= 1.2 (pip)")
        return [found]

    def healthy(self, container: str, wait_s: float = 90) -> bool:
        """Runs the image's HEALTHCHECK: by hand with podman (its timer needs systemd), Docker's own timer else."""
        if self.name == "podman":
            return self("healthcheck", "run", container, check=False).returncode == 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            status = self("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
            if status in ("healthy", "unhealthy"):
                return status == "healthy"
            time.sleep(2)
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float, alive=lambda: True) -> float | None:
    """Seconds until GET url/readyz answers 200 (None if it never did, or alive() turned False)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        if not alive():
            return None
        time.sleep(0.1)
    return None


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    value = fn(*args, **kwargs)
    return value, time.monotonic() - start


@dataclass
class Report:
    """Every check's outcome and every figure, printed as they come and summed up at the end."""

    failures: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        shown = detail if not ok or len(detail) <= 120 else detail[:117] + "..."
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{f': {shown}' if shown else ''}", flush=True)
        if not ok:
            self.failures.append(what)
        return ok

    def figure(self, name: str, value: str) -> None:
        print(f"  ---- {name}: {value}", flush=True)
        self.figures[name] = value

    def summary(self) -> int:
        print("\nfigures:")
        for name, value in self.figures.items():
            print(f"  {name:<34} {value}")
        print(f"\n{len(self.failures)} check(s) failed: {', '.join(self.failures)}" if self.failures
              else "\nevery check passed")
        return 1 if self.failures else 0
