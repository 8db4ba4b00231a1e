"""The contract between training and the service: each kind trains briefly on 512 synthetic images into tmp_path,
the artifact rebuilt with lvm alone reproduces the in-process model, and the service loads it and serves the same
numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import lvm
from service.app import create_app
from service.settings import Settings
from tests.fixtures_mnist import shapes_for, write_fake_mnist
from training import data
from training.config import AEConfig, PPCAConfig, VAEConfig
from training.pipeline import export, measure, train

pytestmark = pytest.mark.slow
CONFIGS = {
    "ppca": PPCAConfig(latent_dim=2, valid_size=64),
    "ae": AEConfig(latent_dim=2, hidden=(64, 32), epochs=1, batch_size=64, valid_size=64, num_threads=1),
    "vae": VAEConfig(latent_dim=2, hidden=(64, 32), epochs=1, batch_size=64, valid_size=64, num_threads=1,
                     iwae_samples=50, iwae_images=50),
}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "FILES", write_fake_mnist(folder, n_train=576, n_test=128))
        mp.setattr(data, "SHAPES", shapes_for(576, 128))
        yield data.load_mnist(folder, valid_size=64)


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """kind -> (in-process model, artifact path), all under one artifacts folder."""
    root = tmp_path_factory.mktemp("artifacts")
    runs = {kind: train(kind, config, mnist) for kind, config in CONFIGS.items()}
    return root, {kind: (run.model, export(run, mnist, measure(run, mnist), root, kind)) for kind, run in runs.items()}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_artifact_rebuilds_the_in_process_model(trained, mnist, kind):
    model, path = trained[1][kind]
    rebuilt = lvm.load_artifact(path).build()
    x, eps = mnist.test.x[:32], torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for ours, theirs in zip(model.encode(x), rebuilt.encode(x)):
            assert (ours is None and theirs is None) or torch.equal(ours, theirs)
        assert torch.equal(model.decode(eps), rebuilt.decode(eps))
        assert torch.equal(model.reconstruct(x, eps)[0], rebuilt.reconstruct(x, eps)[0])
        assert torch.equal(model.sample(eps)[1], rebuilt.sample(eps)[1])


def test_service_serves_what_training_computed(trained, mnist):
    root, models = trained
    x = mnist.test.x[:8]
    app = create_app(Settings(artifacts_dir=root, default_model="vae"))

    async def ask() -> dict[str, tuple[dict, dict]]:
        replies = {}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await app.state.service.initial_load  # the service loads and warms its models after startup
                assert (await client.get("/readyz")).status_code == 200
                for kind in models:
                    encoded = await client.post(f"/encode?model={kind}", json={"images": x.tolist()})
                    decoded = await client.post(f"/decode?model={kind}", json={"latents": [[0.5, -1.0]]})
                    assert encoded.status_code == 200 and decoded.status_code == 200, (encoded.text, decoded.text)
                    replies[kind] = (encoded.json(), decoded.json())
        return replies

    for kind, (encoded, decoded) in asyncio.run(ask()).items():
        model, path = models[kind]
        assert (encoded["model"], encoded["version"]) == (kind, int(path.name))
        with torch.no_grad():
            z_loc, z_scale = model.encode(x)
            expected = model.decode(torch.tensor([[0.5, -1.0]]))
        np.testing.assert_allclose(encoded["mean"], z_loc.numpy(), rtol=1e-4, atol=1e-5)
        assert (encoded["scale"] is None) == (z_scale is None)
        if z_scale is not None:
            np.testing.assert_allclose(encoded["scale"], z_scale.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(decoded["images"], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_artifacts_record_their_figures(trained):
    for kind, (_, path) in trained[1].items():
        metrics = lvm.read_manifest(Path(path))["metrics"]
        assert np.isfinite(metrics["bce_per_image"]) and 0 < metrics["pixel_mse"] < 1
        assert ("iwae_log_likelihood" in metrics) == (kind == "vae")
        assert ("log_likelihood_per_image" in metrics) == (kind == "ppca")
