"""The maths of `score_terms` (lvm/networks.py): PPCA's log density against a dense reference on small dimensions,
the VAE's importance-weighted estimate against a float64 loop, the AE's reconstruction score."""

from __future__ import annotations

import math

import torch

from lvm.networks import PPCA, MLPModel


def test_ppca_log_density_equals_the_dense_gaussian():
    g = torch.Generator().manual_seed(0)
    W, mu = torch.randn(784, 3, generator=g) * 0.2, torch.rand(784, generator=g)
    model = PPCA(W, mu, torch.tensor(0.05))
    x = torch.rand(6, 784, generator=g)
    dense = torch.distributions.MultivariateNormal(mu.double(), W.double() @ W.double().T
                                                   + 0.05 * torch.eye(784, dtype=torch.float64))
    got = model.score_terms(x, None)["log_likelihood"]
    torch.testing.assert_close(got.double(), dense.log_prob(x.double()), rtol=1e-6, atol=1e-3)


def test_vae_estimate_equals_a_float64_loop():
    torch.manual_seed(0)
    model = MLPModel("vae", 2, [16]).eval()
    x = torch.rand(3, 784)
    eps = torch.randn(3, 5, 2)
    terms = model.score_terms(x, eps)
    m64 = model.double()
    for i in range(3):
        loc, scale = m64.encode(x[i:i + 1].double())
        weights, recs = [], []
        for s in range(5):
            z = loc[0] + scale[0] * eps[i, s].double()
            p = torch.sigmoid(m64.logits(z[None]))[0].clamp(1e-12, 1 - 1e-12)
            xi = x[i].double()
            rec = (xi * p.log() + (1 - xi) * (1 - p).log()).sum()
            log_p = -0.5 * (z ** 2).sum() - math.log(2 * math.pi)
            log_q = (-0.5 * eps[i, s].double() ** 2 - scale[0].log() - 0.5 * math.log(2 * math.pi)).sum()
            weights.append(rec + log_p - log_q)
            recs.append(rec)
        ll = torch.logsumexp(torch.stack(weights), 0) - math.log(5)
        kl = 0.5 * (scale[0] ** 2 + loc[0] ** 2 - 1 - 2 * scale[0].log()).sum()
        assert math.isclose(terms["log_likelihood"][i].item(), ll.item(), rel_tol=1e-4)
        assert math.isclose(terms["kl"][i].item(), kl.item(), rel_tol=1e-4, abs_tol=1e-5)
        assert math.isclose(terms["reconstruction"][i].item(), torch.stack(recs).mean().item(), rel_tol=1e-4)
        assert math.isclose(terms["elbo"][i].item(), (torch.stack(recs).mean() - kl).item(), rel_tol=1e-4)


def test_ae_score_is_the_reconstructions_bernoulli_log_likelihood():
    torch.manual_seed(1)
    model = MLPModel("ae", 2, [8]).eval()
    x = torch.rand(4, 784)
    p = model.decode(model.encode(x)[0])
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(model.score_terms(x, None)["log_likelihood"], expected, rtol=1e-4, atol=1e-3)
    assert model.score_term_names == ("log_likelihood",)
