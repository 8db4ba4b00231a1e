"""Device placement, in one place: which device serves, how inputs reach it and how outputs come back.

On CUDA a batch is assembled straight into a pinned host buffer and copied with `non_blocking=True`; on the CPU the
same calls are plain numpy views. Both paths run the same code above this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from service.codecs import ascii_digits

log = logging.getLogger("service.device")


class DeviceError(RuntimeError):
    """The requested device cannot be used; the service refuses to start."""


def resolve_device(spec: str, cuda_available: bool | None = None, cuda_count: int | None = None) -> torch.device:
    """'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N' -> a usable torch.device, or DeviceError."""
    spec = spec.strip().lower()
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if spec == "auto":
        return torch.device("cuda:0" if available else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not available:
            raise DeviceError(f"device {spec!r} requested but CUDA is not available; set LATENTSERVE_DEVICE=cpu or auto")
        index_text = spec.partition(":")[2] or "0"
        if not ascii_digits(index_text):
            raise DeviceError(f"device {spec!r} is not of the form cuda:N")
        count = torch.cuda.device_count() if cuda_count is None else cuda_count
        if int(index_text) >= count:
            raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) exist")
        return torch.device(f"cuda:{int(index_text)}")
    raise DeviceError(f"unknown device {spec!r}; expected auto, cpu, cuda or cuda:N")


def configure_threads(requested: int) -> int:
    """Sets torch's intra-op threads: `requested`, or (0) the cores this process may run on. Returns the count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = requested or max(1, min(cores, torch.get_num_threads()))
    torch.set_num_threads(threads)
    return threads


def flush_denormals() -> bool:
    """Subnormal floats to zero on the calling thread (the compute thread calls it once, as it starts).

    Softplus of a strongly negative pre-activation is a subnormal float, which x86 cores handle in microcode: with
    them, the committed VAE's decoder ran at half speed (BENCHMARKS.md, "Figures behind").
    Values below 1.2e-38 become 0: every operation of the three committed models gave bit-identical outputs on the
    10,000 MNIST test images with and without it. Returns False where the CPU cannot (torch then leaves it alone).
    """
    return torch.set_flush_denormal(True)


class Placement:
    """Moves batches to one device and results back; owned by the device's single compute thread.

    `stage` concatenates the parts of a batch (numpy, (n_i, D) float32) into one (B, D) tensor on the device.
    On CUDA the concatenation writes into a pinned buffer that is reused across batches (grown when needed), and the
    copy to the device is asynchronous; the copy back in `fetch` synchronizes before the buffer is written again.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._buffers: dict[int, Tensor] = {}

    def _pinned_rows(self, rows: int, cols: int) -> Tensor:
        buf = self._buffers.get(cols)
        if buf is None or buf.shape[0] < rows:
            capacity = max(rows, 2 * buf.shape[0] if buf is not None else rows)
            buf = torch.empty((capacity, cols), dtype=torch.float32, pin_memory=True)
            self._buffers[cols] = buf
        return buf[:rows]

    def stage(self, parts: Sequence[np.ndarray]) -> Tensor:
        rows = sum(len(p) for p in parts)
        cols = parts[0].shape[1]
        if self.pinned:
            host = self._pinned_rows(rows, cols)
            np.concatenate(parts, axis=0, out=host.numpy())
            return host.to(self.device, non_blocking=True)
        if len(parts) == 1 and parts[0].flags.writeable and parts[0].flags.c_contiguous:
            return torch.from_numpy(parts[0])
        return torch.from_numpy(np.concatenate(parts, axis=0))

    def fetch(self, outputs: Sequence[Tensor]) -> tuple[np.ndarray, ...]:
        """Results as CPU numpy arrays (a blocking copy on CUDA, so the staged buffer is free again)."""
        return tuple(t.detach().to("cpu").contiguous().numpy() for t in outputs)

    def move(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device)
