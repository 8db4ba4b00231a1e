"""The registry: load, verify and warm every version, refuse broken ones, swap on reload, look names up only."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from service.batcher import BatchConfig
from service.compute import Activity, ComputeThread
from service.device import Placement
from service.errors import InvalidInput, Unavailable, UnknownModel
from service.metrics import Metrics
from service import models
from service.models import choose_batch_size, warmup_sizes
from service.registry import Registry
from service.runtime import Runtime
from service.settings import Settings
from tests import factories

pytestmark = pytest.mark.anyio


def _config(**overrides) -> BatchConfig:
    return replace(BatchConfig.from_settings(Settings(artifacts_dir=".")), **overrides)


def _runtime(compute: ComputeThread, activity: Activity, config: BatchConfig) -> Runtime:
    return Runtime(Placement(torch.device("cpu")), compute, activity, config, Metrics())


@pytest.fixture
async def registry(artifacts_dir):
    activity = Activity()
    compute = ComputeThread(activity)
    reg = Registry(artifacts_dir, "vae", _runtime(compute, activity, _config(max_batch_size=16)))
    yield reg
    await reg.close()
    compute.shutdown()


def test_warmup_covers_powers_of_two_up_to_the_batch_size():
    assert warmup_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert warmup_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert warmup_sizes(1) == [1]


def test_batch_size_is_the_largest_whose_pass_fits_the_bound():
    pass_s = {1: 0.0002, 2: 0.0003, 4: 0.0005, 8: 0.0009, 16: 0.0017}
    assert choose_batch_size(pass_s, 0.001) == 8
    assert choose_batch_size(pass_s, 1.0) == 16
    assert choose_batch_size(pass_s, 0.0) == 16  # 0 turns the bound off


def test_past_the_bound_sizes_grow_while_a_doubling_saves_a_tenth_per_row():
    vae_score_ms = {1: 3.9, 2: 5.8, 4: 10.4, 8: 19.5, 16: 37.4}  # shaped like the VAE's /score passes (BENCHMARKS.md)
    assert choose_batch_size({k: v / 1000 for k, v in vae_score_ms.items()}, 0.003) == 4
    # A faster core where one row just fits the bound: the same rows, the same choice (not 1).
    assert choose_batch_size({k: 0.7 * v / 1000 for k, v in vae_score_ms.items()}, 0.003) == 4
    cheap = {1: 0.0002, 2: 0.0003, 4: 0.0005, 8: 0.0009, 16: 0.0017, 32: 0.0033}  # the per-row cost levels off
    assert choose_batch_size(cheap, 0.002) == 16
    linear = {1: 0.002, 2: 0.004, 4: 0.008}  # no saving at all: the smallest size, never none
    assert choose_batch_size(linear, 0.001) == 1
    assert choose_batch_size({1: 0.002}, 0.001) == 1


def test_cpu_passes_are_timed_in_thread_cpu_time_so_time_spent_waiting_is_not_counted():
    import time

    def waiting_pass(parts):
        time.sleep(0.05)  # as when the event loop holds the one core

    assert models._time_pass(waiting_pass, [], time.thread_time) < 0.02
    assert models._time_pass(waiting_pass, [], time.perf_counter) >= 0.05


class CountingThread(ComputeThread):
    jobs = 0

    async def run(self, fn, *args):
        self.jobs += 1
        return await super().run(fn, *args)


async def test_each_operation_gets_the_batch_size_its_measured_passes_allow(artifacts_dir, monkeypatch):
    # A device on which a pass costs 0.1 ms per row, and reconstruct and score (rows of 784 + a few columns; encode's
    # have one, the digit) twice as much.
    def time_pass(run, parts, clock):
        run(parts)
        return len(parts[0]) * (2e-4 if parts[0].shape[1] > 785 else 1e-4)

    monkeypatch.setattr(models, "_time_pass", time_pass)
    activity = Activity()
    compute = CountingThread(activity)
    reg = Registry(artifacts_dir, "vae", _runtime(compute, activity, _config(max_batch_size=64, max_pass_s=0.0035)))
    try:
        await reg.reload()
        served = reg.get("vae", 1)
        assert served.batch_sizes == {"encode": 32, "decode": 32, "reconstruct": 16, "sample": 32, "score": 16}
        assert {op: b.config.max_batch_size for op, b in served.batchers.items()} == served.batch_sizes
        vae = next(m for m in reg.overview()["models"] if m["name"] == "vae")
        assert vae["batch_sizes"] == served.batch_sizes
        # Every pass is a job of its own (so serving batches can run between them), and sizes stop at the first
        # that overruns: per model (pca, ae, vae, cvae), 3 operations x 7 sizes (1 to 64) and reconstruct and score
        # x 6 (1 to 32), each size 1 untimed + 3 timed passes.
        assert compute.jobs == 4 * (3 * 7 + 2 * 6) * 4
    finally:
        await reg.close()
        compute.shutdown()


async def test_empty_registry_is_unavailable_not_unknown(registry):
    with pytest.raises(Unavailable):
        registry.get(None, None)


async def test_reload_loads_every_version_and_defaults_to_the_highest(registry, artifacts_dir):
    report = await registry.reload()
    assert report["serving"] == {"ae": 1, "cvae": 1, "pca": 1, "vae": 1} and not report["refused"]
    assert registry.get(None, None).name == "vae"
    factories.write(artifacts_dir, "vae", "vae", seed=1)
    report = await registry.reload()
    assert report["loaded"] == [{"name": "vae", "version": 2}]
    assert registry.get("vae", None).version == 2 and registry.get("vae", 1).version == 1


async def test_corrupt_and_invalid_versions_are_refused_and_the_rest_serve(registry, artifacts_dir):
    bad_hash = factories.write(artifacts_dir, "vae", "vae", seed=2)
    (bad_hash / "weights.safetensors").write_bytes(b"tampered")
    bad_manifest = factories.write(artifacts_dir, "ae", "ae", seed=2)
    manifest = json.loads((bad_manifest / "manifest.json").read_text())
    del manifest["kind"]
    (bad_manifest / "manifest.json").write_text(json.dumps(manifest))
    report = await registry.reload()
    refused = {(r["name"], r["version"]): r["reason"] for r in report["refused"]}
    assert "SHA-256" in refused[("vae", 2)] and "kind" in refused[("ae", 2)]
    assert registry.get("vae", None).version == 1 and registry.get("ae", None).version == 1


async def test_removed_versions_are_dropped(registry, artifacts_dir):
    await registry.reload()
    shutil.rmtree(artifacts_dir / "pca")
    report = await registry.reload()
    assert report["dropped"] == [{"name": "pca", "version": 1}]
    with pytest.raises(UnknownModel):
        registry.get("pca", None)


async def test_names_and_versions_are_only_looked_up(registry):
    await registry.reload()
    for name in ("../vae", "vae/1", "/etc/passwd", "VAE"):
        with pytest.raises(UnknownModel):
            registry.get(name, None)
    with pytest.raises(UnknownModel):
        registry.get("vae", 7)
    for text in ("-1", "0", "01", "²", "١", "1" * 10):
        with pytest.raises(InvalidInput, match="ASCII digits"):
            registry.resolve("vae", text)
    assert registry.resolve("vae", "1").version == 1


async def test_odd_version_folders_are_skipped_not_fatal(registry, artifacts_dir):
    for odd in ("²", "١", "01"):
        (artifacts_dir / "vae" / odd).mkdir()
    report = await registry.reload()
    assert report["serving"] == {"ae": 1, "cvae": 1, "pca": 1, "vae": 1} and not report["refused"]
    assert sorted(registry.models["vae"]) == [1]


async def test_hostile_manifest_is_refused_with_its_reason(registry, artifacts_dir):
    path = factories.write(artifacts_dir, "vae", "vae", seed=3)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["latent_dim"] = manifest["architecture"]["latent_dim"] = 30000
    (path / "manifest.json").write_text(json.dumps(manifest))
    report = await registry.reload()
    assert "latent_dim must be an integer in [1, 512], got 30000" in report["refused"][0]["reason"]
    assert registry.get("vae", None).version == 1
