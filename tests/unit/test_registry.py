"""The registry: load, verify and warm every version, refuse broken ones, swap on reload, look names up only."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from service.batcher import Activity, BatchConfig, ComputeThread
from service.device import Placement
from service.errors import InvalidInput, Unavailable, UnknownModel
from service.metrics import Metrics
from service.models import warmup_sizes
from service.registry import Registry
from tests import factories
from tests.factories import artifacts_dir, artifacts_template  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def registry(artifacts_dir):
    activity = Activity()
    compute = ComputeThread(activity)
    reg = Registry(artifacts_dir, "vae", Placement(torch.device("cpu")), compute, activity,
                   BatchConfig(max_batch_size=16), Metrics())
    yield reg
    await reg.close()
    compute.shutdown()


def test_warmup_covers_powers_of_two_up_to_the_batch_size():
    assert warmup_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert warmup_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert warmup_sizes(1) == [1]


async def test_empty_registry_is_unavailable_not_unknown(registry):
    with pytest.raises(Unavailable):
        registry.get(None, None)


async def test_reload_loads_every_version_and_defaults_to_the_highest(registry, artifacts_dir):
    report = await registry.reload()
    assert report["serving"] == {"ae": 1, "pca": 1, "vae": 1} and not report["refused"]
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
    with pytest.raises(InvalidInput):
        registry.resolve("vae", "-1")
