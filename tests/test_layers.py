"""Bayesian layers: LRT moments vs brute-force weight sampling, KL vs torch.distributions, modes, bayesianize.

    python -m pytest tests/test_layers.py -x -q
"""

import signal

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence

from ssvi.bayesianize import bayesianize
from ssvi.errors import UserError
from ssvi.layers import (BayesConv2d, BayesLinear, PosteriorInit, inverse_softplus, resample, sample_rho, set_mode,
                         total_kl)


def _wide_posterior(layer):
    """Give the layer sizeable sigma so moments are measurable."""
    with torch.no_grad():
        layer.weight_mu.normal_(0, 0.5)
        layer.weight_rho.copy_(inverse_softplus(torch.rand_like(layer.weight_rho) * 0.5 + 0.1))


@pytest.mark.parametrize("layer", [BayesLinear(6, 4), BayesConv2d(2, 3, 3, padding=1)], ids=["linear", "conv"])
def test_lrt_moments_match_weight_sampling(layer):
    _wide_posterior(layer)
    with torch.no_grad():
        layer.mask.view(-1)[::3] = False  # masked weights must not contribute to the variance
        layer.weight_mu.mul_(layer.mask)
    x = torch.randn(1, 6) if isinstance(layer, BayesLinear) else torch.randn(1, 2, 4, 4)
    n = 20000
    with torch.no_grad():
        lrt = torch.stack([layer(x) for _ in range(n)])
        set_mode(layer, "sample")
        brute = []
        for _ in range(n):
            resample(layer)
            brute.append(layer(x))
        brute = torch.stack(brute)
    assert torch.allclose(lrt.mean(0), brute.mean(0), atol=0.03)
    assert torch.allclose(lrt.var(0), brute.var(0), rtol=0.08, atol=1e-3)


def test_kl_matches_torch_distributions():
    layer = BayesLinear(5, 7)
    _wide_posterior(layer)
    layer.mask.view(-1)[:10] = False
    prior = Normal(0.0, 0.005)
    expected = (kl_divergence(Normal(layer.weight_mu, layer.sigma), prior) * layer.mask).sum()
    assert torch.allclose(layer.kl(0.005), expected, rtol=1e-5)


def test_init_follows_reference():
    rho = sample_rho(torch.Size([200_000]), PosteriorInit())
    sigma = torch.nn.functional.softplus(rho)
    assert torch.isfinite(rho).all() and (sigma > 0).all()
    # |N(6e-4, 5e-4^2)| has mean ~6.4e-4
    assert abs(sigma.mean().item() - 6.4e-4) < 2e-5
    layer = BayesConv2d(64, 64, 3)
    assert abs(layer.weight_mu.std().item() - 0.01) < 5e-4


def test_modes_mean_and_fixed_sample():
    layer = BayesLinear(4, 3)
    _wide_posterior(layer)
    x = torch.randn(2, 4)
    set_mode(layer, "mean")
    assert torch.equal(layer(x), x @ layer.weight_mu.T + layer.bias)
    set_mode(layer, "sample")
    with pytest.raises(RuntimeError, match="resample"):
        layer(x)
    resample(layer)
    assert torch.equal(layer(x), layer(x))  # the sample stays fixed until resampled
    first = layer(x)
    resample(layer)
    assert not torch.equal(first, layer(x))
    with pytest.raises(ValueError, match="allowed"):
        set_mode(layer, "bogus")


def test_bayesianize_keeps_shapes_and_deterministic_parts():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    bias = model[0].bias.detach().clone()
    bayesianize(model)
    assert isinstance(model[0], BayesConv2d) and isinstance(model[4], BayesLinear)
    assert isinstance(model[1], nn.BatchNorm2d)
    assert torch.equal(model[0].bias, bias)
    assert model[0].stride == (2, 2) and model[0].weight_mu.shape == (8, 3, 3, 3)
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5)
    assert total_kl(model, 0.005) > 0


def test_sample_rho_gives_up_after_bounded_redraws():
    # softplus^-1(1000) = log(expm1(1000)) overflows float32 on every draw; it used to redraw forever
    def give_up(signum, frame):
        raise TimeoutError("sample_rho is still redrawing after 60 s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    try:
        with pytest.raises(UserError, match=r"sigma_init=1000.0, .*lower sigma_init"):
            sample_rho(torch.Size([10]), PosteriorInit(sigma_mean=1000.0, sigma_std=1.0))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
