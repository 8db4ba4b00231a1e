"""Inputs, references and a real server process shared by the test suites (one copy of each helper)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import lvm

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(1)
IMAGES_U8 = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
IMAGES = IMAGES_U8.reshape(3, 784).astype(np.float32) / 255


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    """A PNG of `array` (converted to Pillow `mode` first when given, e.g. "RGB")."""
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_b64(array: np.ndarray, mode: str | None = None) -> str:
    return base64.b64encode(png_bytes(array, mode)).decode()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def reference(artifacts_dir: Path, name: str, version: int = 1) -> lvm.LatentModel:
    """The same artifact built in-process, to compare the service's answers with."""
    return lvm.load_artifact(artifacts_dir / name / str(version)).build()


def run(fn, *args):
    with torch.inference_mode():
        return fn(*(torch.as_tensor(a) for a in args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, log: Path | None = None,
               timeout_s: float = 60.0, path: str = "/readyz") -> None:
    """Polls `url + path` until it answers 200; raises with the log's tail if the process dies or time runs out."""
    tail = (lambda: log.read_text(errors="replace")[-2000:]) if log else (lambda: "")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {tail()}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} not ready in {timeout_s:.0f} s: {tail()}")


def start_server(artifacts: Path, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m service` (uvicorn) on a free loopback port over `artifacts`, ready; `env` adds LATENTSERVE_*
    settings by their lower-case names (e.g. api_key="k")."""
    port = free_port()
    settings = {"HOST": "127.0.0.1", "PORT": str(port), "ARTIFACTS_DIR": str(artifacts), "MAX_BATCH_SIZE": "64",
                "TORCH_THREADS": "1", **{k.upper(): str(v) for k, v in env.items()}}
    full_env = {**os.environ, **{f"LATENTSERVE_{k}": v for k, v in settings.items()},
                "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=full_env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
    except RuntimeError:
        proc.kill()
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def until(condition: Callable[[], object], timeout_s: float = 10.0, every_s: float = 0.01) -> object:
    """Polls `condition` (a function, or one returning an awaitable) until its value is true, and returns that value;
    fails after timeout_s. The one bounded wait on observable state that tests use instead of sleeping."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s:g} s: {condition}")
        await asyncio.sleep(every_s)
