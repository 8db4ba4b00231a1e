"""Device choice and placement: the CUDA logic is checked on the CPU by faking availability."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from service.device import DeviceError, Placement, configure_threads, flush_denormals, resolve_device


def test_auto_picks_cuda_only_when_available():
    assert resolve_device("auto", cuda_available=True, cuda_count=1) == torch.device("cuda:0")
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("CPU", cuda_available=True) == torch.device("cpu")
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda:1")


@pytest.mark.parametrize(
    "spec, available, message",
    [("cuda", False, "not available"), ("cuda:0", False, "not available"), ("cuda:3", True, "only 2"),
     ("cuda:x", True, "cuda:N"), ("cuda:²", True, "cuda:N"), ("tpu", True, "unknown device")],
)
def test_unusable_devices_are_refused_with_a_clear_message(spec, available, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(spec, cuda_available=available, cuda_count=2)


def test_real_availability_is_consulted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError):
        resolve_device("cuda")


def test_cpu_placement_does_not_pin_and_avoids_copies():
    placement = Placement(torch.device("cpu"))
    assert not placement.pinned
    part = np.ones((3, 4), np.float32)
    staged = placement.stage([part])
    assert staged.data_ptr() == part.__array_interface__["data"][0]  # a view, no copy
    merged = placement.stage([part, np.zeros((2, 4), np.float32)])
    assert merged.shape == (5, 4) and merged[3:].sum() == 0
    (out,) = placement.fetch([merged * 2])
    assert isinstance(out, np.ndarray) and out[0, 0] == 2


def test_cuda_placement_stages_through_a_reused_pinned_buffer(monkeypatch):
    """On a CUDA device the batch is written into one pinned buffer per width, grown only when needed."""
    allocations = []
    real_empty = torch.empty

    def fake_empty(*shape, pin_memory=False, **kwargs):
        allocations.append(pin_memory)
        return real_empty(*shape, **kwargs)  # no CUDA here: an ordinary buffer stands in for the pinned one

    moves = []
    monkeypatch.setattr(torch, "empty", fake_empty)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **kw: moves.append(kw) or self)
    placement = Placement(torch.device("cuda:0"))
    assert placement.pinned
    first = placement.stage([np.ones((2, 4), np.float32), np.full((1, 4), 3, np.float32)])
    again = placement.stage([np.ones((3, 4), np.float32)])
    assert allocations == [True] and moves == [{"non_blocking": True}, {"non_blocking": True}]
    assert first.shape == (3, 4) and again.data_ptr() == first.data_ptr()
    placement.stage([np.ones((7, 4), np.float32)])
    assert allocations == [True, True]


def test_thread_count_follows_the_request_or_the_cores():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(0) >= 1
    finally:
        torch.set_num_threads(before)


def _subnormal() -> float:
    return (torch.tensor([1e-30]) * 1e-10).item()  # 1e-40 is below float32's smallest normal number


def test_denormals_are_flushed_on_the_calling_thread_only():
    flushed = []

    def compute_thread() -> None:
        flushed.append(flush_denormals())
        flushed.append(_subnormal())

    thread = threading.Thread(target=compute_thread)
    thread.start()
    thread.join()
    if not flushed[0]:
        pytest.skip("this CPU cannot flush denormals")
    assert flushed[1] == 0.0
    assert _subnormal() > 0.0  # other threads keep IEEE subnormals


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_round_trip_matches_cpu():
    placement = Placement(resolve_device("cuda"))
    parts = [np.random.default_rng(0).random((5, 8), dtype=np.float32)]
    (out,) = placement.fetch([placement.stage(parts) * 2])
    np.testing.assert_allclose(out, parts[0] * 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_service_refuses_to_start_on_missing_cuda_with_one_clear_line():
    import os
    import subprocess
    import sys

    env = {**os.environ, "LATENTSERVE_DEVICE": "cuda", "LATENTSERVE_PORT": "1"}
    result = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "CUDA is not available" in result.stderr and "Traceback" not in result.stderr
