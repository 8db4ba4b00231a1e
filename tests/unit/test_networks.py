"""Shapes and invariants of the shared network definitions."""

import pytest
import torch

from lvm.architecture import build_model
from lvm.networks import MIN_SCALE, MLPModel, PPCA


@pytest.mark.parametrize("kind", ["ae", "vae"])
@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_mlp_shapes(kind, latent_dim):
    model = MLPModel(kind, latent_dim, [32, 16])
    x = torch.rand(7, 784)
    z_loc, z_scale = model.encode(x)
    assert z_loc.shape == (7, latent_dim)
    assert (z_scale is None) == (kind == "ae")
    if z_scale is not None:
        assert z_scale.shape == (7, latent_dim) and bool((z_scale >= MIN_SCALE).all())
    x_loc = model.decode(z_loc)
    assert x_loc.shape == (7, 784) and bool(((x_loc >= 0) & (x_loc <= 1)).all())


def test_decoder_mirrors_encoder():
    model = MLPModel("vae", 2, [64, 32])
    widths = [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 64, 784]


def test_reconstruct_with_zero_noise_uses_posterior_mean():
    model = MLPModel("vae", 2, [16])
    x = torch.rand(3, 784)
    x_loc, z_loc, _ = model.reconstruct(x, torch.zeros(3, 2))
    torch.testing.assert_close(x_loc, model.decode(z_loc))
    shifted, _, z_scale = model.reconstruct(x, torch.ones(3, 2))
    torch.testing.assert_close(shifted, model.decode(z_loc + z_scale))


def test_sample_maps_noise_through_the_prior():
    model = MLPModel("ae", 2, [16])
    model.prior_loc.copy_(torch.tensor([1.0, -2.0]))
    model.prior_scale_tril.copy_(torch.tensor([[2.0, 0.0], [0.5, 0.1]]))
    z, x_loc = model.sample(torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(z, torch.tensor([[3.0, -1.4]]))
    torch.testing.assert_close(x_loc, model.decode(z))


def test_ppca_decode_is_clipped_linear_map():
    W = torch.randn(784, 2)
    mu = torch.rand(784)
    model = PPCA(W, mu, torch.tensor(0.1))
    z = torch.randn(4, 2)
    torch.testing.assert_close(model.decode(z), (z @ W.T + mu).clamp(0, 1))


def test_build_model_rejects_mismatched_shapes():
    model = MLPModel("vae", 2, [16])
    with pytest.raises(ValueError, match="do not match"):
        build_model("vae", MLPModel("vae", 2, [32]).architecture(), model.state_dict())
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("gan", {"latent_dim": 2}, {})
    with pytest.raises(ValueError, match=r"W has shape \[784, 2\], the architecture needs \[784, 3\]"):
        W = torch.randn(784, 2)
        arch = {"type": "ppca", "input_dim": 784, "latent_dim": 3}
        build_model("ppca", arch, {"W": W, "mu": torch.zeros(784), "sigma2": torch.tensor(1.0)})
