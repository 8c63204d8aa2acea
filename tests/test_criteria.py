"""Tests of ssvi.criteria: closed forms vs Monte Carlo and mpmath, float32 stability, ranks, IoU, Spearman."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssvi.criteria import CRITERIA, DEFAULT_CRITERION, removal_set_iou, score, spearman

# (mu, sigma) grid: mu = 0, negative mu, sigma >> |mu|, |mu| >> sigma (t = 50), CIFAR scales.
MC_GRID = [
    (0.0, 1e-3),
    (2e-4, 1e-3),        # sigma >> |mu|
    (-1e-2, 1e-3),       # CIFAR scale, t = 10
    (1e-2, 2e-4),        # t = 50
    (-3e-3, 2e-3),
    (0.5, 0.4),
    (-0.2, 0.5),
    (0.05, 0.3),
]
N_MC = 1_000_000


@pytest.fixture(scope="module")
def z() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal(N_MC)


def _scores(mu: float, sigma: float, lam: float = 1.0, dtype=torch.float64) -> dict[str, float]:
    m, s = torch.tensor([mu], dtype=dtype), torch.tensor([sigma], dtype=dtype)
    return {c: float(score(c, m, s, lam)[0]) for c in CRITERIA}


# --------------------------------------------------------------------------------------------
# Against Monte Carlo (float64, common random numbers)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mu,sigma", MC_GRID)
def test_abs_moments_match_monte_carlo(z, mu, sigma):
    x = np.abs(mu + sigma * z)
    got = _scores(mu, sigma)
    m1, sd = x.mean(), x.std()
    assert got["mean"] == pytest.approx(abs(mu), rel=1e-15, abs=0)
    assert got["snr"] == pytest.approx(abs(mu) / sigma, rel=1e-12, abs=0)
    assert abs(got["E_mean_abs"] - m1) < 5 * sd / math.sqrt(N_MC)
    assert got["SNR_mean_abs"] == pytest.approx(m1 / sd, rel=5e-3)


# e^{λ|θ|} is heavy-tailed (lognormal-like) when λσ is large: keep λσ <= 0.5 so that the sample
# variance converges (the mpmath tests below cover large λσ).
EXP_MC_GRID = [(mu, sigma, lam) for lam in (1.0, 2.5) for mu, sigma in MC_GRID if lam * sigma <= 0.5]


@pytest.mark.parametrize("mu,sigma,lam", EXP_MC_GRID)
def test_exp_moments_match_monte_carlo(z, mu, sigma, lam):
    y = np.exp(lam * np.abs(mu + sigma * z))
    got = _scores(mu, sigma, lam)
    m, sd = y.mean(), y.std()  # numpy's std is two-pass: no cancellation
    assert abs(got["E_exp_mean_abs"] - m) < 5 * sd / math.sqrt(N_MC)
    assert got["SNR_exp_mean_abs"] == pytest.approx(m / sd, rel=1e-2)


# --------------------------------------------------------------------------------------------
# Against mpmath (50 digits), float64 and float32 inputs
# --------------------------------------------------------------------------------------------

def _mp_reference(name: str, mu: float, sigma: float, lam: float):
    mp = pytest.importorskip("mpmath").mp
    with mp.workdps(50):
        mu, sigma = mp.mpf(mu), mp.mpf(sigma)
        a, t = abs(mu), abs(mu) / sigma
        m1 = mu * mp.erf(mu / (sigma * mp.sqrt(2))) + sigma * mp.sqrt(2 / mp.pi) * mp.exp(-mu ** 2 / (2 * sigma ** 2))

        def big_m(lmb):
            lmb = mp.mpf(lmb)
            return (mp.exp(lmb * mu + lmb ** 2 * sigma ** 2 / 2) * mp.ncdf(mu / sigma + lmb * sigma)
                    + mp.exp(-lmb * mu + lmb ** 2 * sigma ** 2 / 2) * mp.ncdf(-mu / sigma + lmb * sigma))

        value = {
            "mean": lambda: a,
            "snr": lambda: t,
            "E_mean_abs": lambda: m1,
            "SNR_mean_abs": lambda: m1 / mp.sqrt(mu ** 2 + sigma ** 2 - m1 ** 2),
            "E_exp_mean_abs": lambda: big_m(lam),
            "SNR_exp_mean_abs": lambda: big_m(lam) / mp.sqrt(big_m(2 * lam) - big_m(lam) ** 2),
        }[name]()
        return float(value)


MP_MUS = [0.0, 1e-6, -3e-4, 1e-3, -1e-2, 2e-2, -5e-2, 0.3, 1.0]
MP_SIGMAS = [1e-7, 1e-5, 1e-4, 6e-4, 9.99e-4, 1.001e-3, 3e-3, 3e-2, 0.5, 2.0]


@pytest.mark.parametrize("lam", [1.0, 0.3, 4.0])
@pytest.mark.parametrize("name", CRITERIA)
def test_float64_matches_mpmath(name, lam):
    mus = torch.tensor([m for m in MP_MUS for _ in MP_SIGMAS], dtype=torch.float64)
    sigmas = torch.tensor([s for _ in MP_MUS for s in MP_SIGMAS], dtype=torch.float64)
    got = score(name, mus, sigmas, lam)
    assert got.dtype == torch.float64
    ref = torch.tensor([_mp_reference(name, float(m), float(s), lam) for m, s in zip(mus, sigmas)],
                       dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", CRITERIA)
def test_float32_cifar_scale_matches_mpmath(name):
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(64, generator=gen) * 1e-2
    mu[:4] = torch.tensor([0.0, -0.0, 5e-2, -5e-2])
    sigma = (torch.randn(64, generator=gen) * 5e-4 + 6e-4).abs() + 1e-6
    sigma[2:4] = 1e-3  # |mu|/sigma = 50
    sigma[4:8] = torch.tensor([1e-1, 3e-1, 1.0, 2e-2])  # sigma >> |mu|
    got = score(name, mu, sigma)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    ref = torch.tensor([_mp_reference(name, float(m), float(s), 1.0) for m, s in zip(mu, sigma)],
                       dtype=torch.float64)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=0)


def test_naive_float32_exp_variance_would_cancel():
    """The textbook M(2λ) − M(λ)² in float32 is useless at CIFAR scales; ours is accurate."""
    mu = torch.tensor([1e-2, -2e-2, 5e-2, 3e-3])
    sigma = torch.tensor([1e-3, 6e-4, 1e-3, 2e-4])

    def naive_m(lmb):
        std = torch.distributions.Normal(0.0, 1.0)
        return (torch.exp(lmb * mu + lmb ** 2 * sigma ** 2 / 2) * std.cdf(mu / sigma + lmb * sigma)
                + torch.exp(-lmb * mu + lmb ** 2 * sigma ** 2 / 2) * std.cdf(-mu / sigma + lmb * sigma))

    naive = naive_m(1.0) / torch.sqrt(naive_m(2.0) - naive_m(1.0) ** 2)
    ref = torch.tensor([_mp_reference("SNR_exp_mean_abs", float(m), float(s), 1.0) for m, s in zip(mu, sigma)])
    naive_err = ((naive - ref).abs() / ref).nan_to_num(float("inf"))
    assert naive_err.max() > 1e-2  # the naive form is wrong (or NaN) somewhere
    torch.testing.assert_close(score("SNR_exp_mean_abs", mu, sigma), ref, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# Special values, edge cases, symmetry
# --------------------------------------------------------------------------------------------

def test_mu_zero_closed_forms():
    sigma = torch.tensor([1e-4, 1e-3, 0.1, 1.0], dtype=torch.float64)
    mu = torch.zeros_like(sigma)
    torch.testing.assert_close(score("E_mean_abs", mu, sigma), sigma * math.sqrt(2 / math.pi))
    torch.testing.assert_close(score("SNR_mean_abs", mu, sigma),
                               torch.full_like(sigma, math.sqrt(2 / math.pi) / math.sqrt(1 - 2 / math.pi)))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    torch.testing.assert_close(score("E_exp_mean_abs", mu, sigma, 2.0),
                               2 * torch.exp(2 * sigma ** 2) * normal.cdf(2 * sigma))
    assert (score("mean", mu, sigma) == 0).all() and (score("snr", mu, sigma) == 0).all()


def test_large_snr_limits():
    sigma = torch.tensor([1e-3, 1e-4, 1e-6], dtype=torch.float64)
    mu = 50 * sigma * torch.tensor([1.0, -200.0, 1e4], dtype=torch.float64)  # t = 50, 1e4, 5e5
    t = mu.abs() / sigma
    torch.testing.assert_close(score("E_mean_abs", mu, sigma), mu.abs(), rtol=1e-15, atol=0)
    torch.testing.assert_close(score("SNR_mean_abs", mu, sigma), t, rtol=1e-15, atol=0)
    # |θ| ≈ θ: e^{λ|θ|} is lognormal, SNR = 1/sqrt(e^{λ²σ²} − 1)
    s = sigma
    torch.testing.assert_close(score("SNR_exp_mean_abs", mu, sigma), 1 / torch.sqrt(torch.expm1(s ** 2)),
                               rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", CRITERIA)
def test_symmetric_in_mu_and_shape_dtype(name):
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 5, generator=gen) * 1e-2
    sigma = torch.rand(3, 5, generator=gen) * 1e-3 + 1e-5
    pos, neg = score(name, mu, sigma), score(name, -mu, sigma)
    assert pos.shape == mu.shape and pos.dtype == torch.float32
    assert torch.equal(pos, neg)
    assert score(name, mu, 1e-3).shape == mu.shape  # broadcasting a scalar sigma
    assert score(name, torch.empty(0), torch.empty(0)).shape == (0,)
    assert score(name, torch.tensor(0.01), torch.tensor(1e-3)).shape == ()


@pytest.mark.parametrize("name", CRITERIA)
def test_no_nan_or_inf_on_extremes(name):
    mu = torch.tensor([0.0, 0.0, 1e-2, -1e-2, 1e-30, 3.0, 1e-2, 0.0])
    sigma = torch.tensor([0.0, 1e-30, 0.0, 1e-12, 1e-30, 1e-3, 10.0, 10.0])
    out = score(name, mu, sigma)
    assert torch.isfinite(out).all(), out
    assert (out >= 0).all()


def test_errors():
    mu, sigma = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError) as err:
        score("snr_mean", mu, sigma)
    for name in CRITERIA:
        assert name in str(err.value)
    with pytest.raises(ValueError):
        score("E_exp_mean_abs", mu, sigma, lam=0.0)
    with pytest.raises(ValueError):
        score("SNR_exp_mean_abs", mu, sigma, lam=float("nan"))
    with pytest.raises(ValueError):
        score("snr", mu, -sigma)
    assert DEFAULT_CRITERION == "SNR_mean_abs" and DEFAULT_CRITERION in CRITERIA


def test_lam_changes_exp_variants_only():
    gen = torch.Generator().manual_seed(2)
    mu = torch.randn(100, generator=gen, dtype=torch.float64) * 1e-2
    sigma = torch.rand(100, generator=gen, dtype=torch.float64) * 1e-3 + 1e-4
    for name in CRITERIA:
        a, b = score(name, mu, sigma, 1.0), score(name, mu, sigma, 3.0)
        if "exp" in name:
            assert not torch.allclose(a, b, rtol=1e-6, atol=0)
        else:
            assert torch.equal(a, b)
    # larger λ puts more weight on |μ|: E e^{λ|θ|} grows with λ
    assert (score("E_exp_mean_abs", mu, sigma, 3.0) > score("E_exp_mean_abs", mu, sigma, 1.0)).all()


# --------------------------------------------------------------------------------------------
# Ranking consistency
# --------------------------------------------------------------------------------------------

def test_snr_mean_abs_is_increasing_in_snr():
    t = torch.linspace(0.0, 60.0, 60_001, dtype=torch.float64)
    s = score("SNR_mean_abs", t, torch.ones_like(t))
    assert (s[1:] >= s[:-1]).all()
    coarse = s[100::100]  # t >= 0.1
    assert (coarse[1:] > coarse[:-1]).all()
    assert s[0].item() == pytest.approx(math.sqrt(2 / math.pi) / math.sqrt(1 - 2 / math.pi), rel=1e-14)


def test_rank_agreement_between_criteria():
    gen = torch.Generator().manual_seed(3)
    sigma = (torch.rand(20_000, generator=gen, dtype=torch.float64) * 1e-3 + 1e-4)
    mu = torch.randn(20_000, generator=gen, dtype=torch.float64) * 1e-2
    assert spearman(score("snr", mu, sigma), score("SNR_mean_abs", mu, sigma)) == pytest.approx(1.0, abs=1e-12)
    # when |μ| >> σ the expected magnitude is |μ|
    big = mu.abs() / sigma > 5
    assert spearman(score("mean", mu[big], sigma[big]), score("E_mean_abs", mu[big], sigma[big])) \
        == pytest.approx(1.0, abs=1e-12)
    # the same removal sets at 30 % removal
    k = int(0.3 * mu.numel())
    removed = {c: torch.zeros(mu.numel(), dtype=torch.bool) for c in ("snr", "SNR_mean_abs")}
    for c in removed:
        removed[c][torch.topk(-score(c, mu, sigma), k).indices] = True
    assert removal_set_iou(removed["snr"], removed["SNR_mean_abs"]) == 1.0


# --------------------------------------------------------------------------------------------
# IoU and Spearman
# --------------------------------------------------------------------------------------------

def test_removal_set_iou():
    a = torch.tensor([True, True, False, False, True])
    b = torch.tensor([True, False, True, False, True])
    assert removal_set_iou(a, b) == pytest.approx(2 / 4)
    assert removal_set_iou(a, a) == 1.0
    assert removal_set_iou(a, ~a) == 0.0
    empty = torch.zeros(5, dtype=torch.bool)
    assert removal_set_iou(empty, empty) == 1.0
    assert removal_set_iou(empty, a) == 0.0
    assert removal_set_iou(a.view(1, 5), b.view(1, 5)) == pytest.approx(0.5)
    with pytest.raises(TypeError):
        removal_set_iou(a.int(), b.int())
    with pytest.raises(ValueError):
        removal_set_iou(a, b[:4])


def test_spearman_known_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # d = (-1, 1, -1, 1, 0): rho = 1 - 6*4 / (5*24) = 0.8
    assert spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)
    assert math.isnan(spearman(torch.tensor([1.0]), torch.tensor([2.0])))
    with pytest.raises(ValueError):
        spearman(a, a[:3])


def test_spearman_matches_scipy_on_continuous_scores():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(500, generator=gen)
    y = x + torch.randn(500, generator=gen)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)
