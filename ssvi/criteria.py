r"""Removal criteria of the sparse subspace update: scores of a Gaussian weight θ ~ N(μ, σ²).

Higher score = more worth keeping; the update keeps the active weights with the highest score
(paper, Sec. 3; names as in the authors' code). Φ / φ are the standard normal CDF / density.

=====================  ========================================================================
name                   score
=====================  ========================================================================
``mean``               |μ|
``snr``                |μ| / σ
``E_mean_abs``         m₁ = E|θ| = μ·erf(μ/(σ√2)) + σ·√(2/π)·exp(−μ²/(2σ²))
``SNR_mean_abs``       m₁ / sqrt(Var|θ|),  Var|θ| = μ² + σ² − m₁²          (default)
``E_exp_mean_abs``     M(λ) = E e^{λ|θ|} = e^{λμ+λ²σ²/2}·Φ(μ/σ+λσ) + e^{−λμ+λ²σ²/2}·Φ(−μ/σ+λσ)
``SNR_exp_mean_abs``   M(λ) / sqrt(Var e^{λ|θ|}),  Var e^{λ|θ|} = M(2λ) − M(λ)²
=====================  ========================================================================

All six depend on μ only through a = |μ|. λ = ``lam`` (default 1) enters the exp variants only.

Numerics
--------
The textbook forms cancel catastrophically at the scales SSVI meets (|μ| ~ 1e-2, σ ~ 1e-3,
t = |μ|/σ up to 50 and beyond): μ² + σ² − m₁² subtracts numbers ~t² apart to get one ~1, and
M(2λ) − M(λ)² subtracts numbers ~1 to get one ~(λσ)². Everything is therefore computed in float64
from stable forms and cast back to the input dtype:

* Write t = a/σ, |θ| =ᵈ σ|t + Z| with Z ~ N(0, 1), and V = |θ|/σ − t (density φ(v) + φ(v + 2t)
  on v > −t) and T_j(t) = ∫₀^∞ w^j φ(t + w) dw = E[(−Z − t)^j; Z < −t] (upper-tail partial moments;
  T_0 = Φ(−t), T_1 = φ(t) − tΦ(−t)). T_j = φ(t)·I_j(t) with I_0 = √(π/2)·erfcx(t/√2),
  I_1 = 1 − t·I_0, I_j = (j−1)·I_{j−2} − t·I_{j−1}; the recurrence loses ~2j·log10(t) digits,
  which is harmless because every T_j enters multiplied by a factor that makes its contribution
  ≤ ~φ(t)·poly(t) of the result, and φ(t) underflows to exactly 0 for t > 38.6 (t is clamped at 40
  inside the tail terms).
* Moments of V without cancellation: c₁ = E V = 2T₁, c₂ = 1 − 4tT₁, c₃ = 2T₃ + 6t²T₁,
  c₄ = 3 − 8tT₃ − 8t³T₁ (every correction has one sign).
* ``E_mean_abs`` m₁ = σ(t + 2T₁);  Var|θ| = σ²·Var V with Var V = 1 − 4T₁(t + T₁) ∈ [1 − 2/π, 1]
  (no cancellation). So ``SNR_mean_abs`` = (t + 2T₁)/sqrt(1 − 4T₁(t + T₁)) is a function of
  t = |μ|/σ alone, increasing in t: it ranks weights exactly like ``snr`` (up to float32 ties of
  the returned values), from 2φ(0)/sqrt(1 − 2/π) ≈ 1.3236 at μ = 0 to ≈ t for large t.
* Exp variants, with s = λσ: M(λ) = e^{λa}·F(s), F(s) = E e^{sV}, and
  log F(s) = s²/2 + log1p(e^{−2st}Φ(s − t) − Φ(−t − s)) (the log1p argument is a difference of
  two tail probabilities, each accurate to relative precision, and > −1/2).
  Var e^{λ|θ|} = e^{2λa}·G(s), G(s) = Var e^{sV}:
    - s ≥ 1e-3: G = F(2s)·(−expm1(2 log F(s) − log F(2s))) in log space (relative error
      ~1e-16/s² ≤ 1e-10, no overflow for large s);
    - s < 1e-3: Taylor series G = s²·[Var V + s(c₃ − c₁c₂) + s²(14c₄ − 8c₁c₃ − 6c₂²)/24] + O(s⁵)
      (truncation ≤ ~3e-9 relative), from Var e^{sV} = Σₙ sⁿ/n!·(E(2V)ⁿ − E(V + V′)ⁿ).
  ``SNR_exp_mean_abs`` = exp(log F(s) − ½ log G(s)) does not depend on a except through t,
  and never forms e^{λa}; ``E_exp_mean_abs`` = exp(λa + log F(s)) overflows only where M itself
  exceeds the output dtype's range (λ|μ| > ~88 in float32).

Tests (``tests/test_criteria.py``) check every criterion against Monte Carlo moments and against
mpmath at 50 digits, including float32 inputs at CIFAR scales, μ = 0, σ ≫ |μ| and |μ|/σ up to 1e4.

σ must be ≥ 0; σ below 1e-30 is treated as 1e-30 (so σ = 0 gives large finite scores, not NaN).
Score computation follows broadcasting of ``mu`` and ``sigma``; the result has the broadcast
shape and the promoted floating dtype of the inputs.

Also here: :func:`removal_set_iou` and :func:`spearman`, used to compare criteria (paper's Table 4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CRITERIA", "DEFAULT_CRITERION", "score", "removal_set_iou", "spearman"]

CRITERIA: tuple[str, ...] = ("mean", "snr", "E_mean_abs", "SNR_mean_abs", "E_exp_mean_abs", "SNR_exp_mean_abs")
DEFAULT_CRITERION = "SNR_mean_abs"

_SIGMA_MIN = 1e-30       # σ floor (float64 internal computation)
_T_TAIL_MAX = 40.0       # φ(t) == 0 in float64 for t > 38.6: tail terms are exactly zero beyond
_SERIES_MAX_S = 1e-3     # below this s = λσ the exp-variance uses its Taylor series
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# Internals (float64)
# --------------------------------------------------------------------------------------------

def _tail_moments(t: Tensor, jmax: int) -> tuple[Tensor, list[Tensor]]:
    """Clamped t and [T_0, ..., T_jmax], T_j(t) = ∫_0^∞ w^j φ(t + w) dw, for t >= 0 (float64)."""
    tc = t.clamp(max=_T_TAIL_MAX)
    phi = torch.exp(-0.5 * tc * tc - _LOG_SQRT_2PI)
    i_prev = math.sqrt(math.pi / 2.0) * torch.special.erfcx(tc / math.sqrt(2.0))  # I_0 (Mills ratio)
    ints = [i_prev]
    if jmax >= 1:
        ints.append(1.0 - tc * i_prev)
    for j in range(2, jmax + 1):
        ints.append((j - 1) * ints[j - 2] - tc * ints[j - 1])
    return tc, [phi * i for i in ints]


def _folded_moments(t: Tensor, order: int) -> tuple[Tensor, ...]:
    """(c_1, ..., c_order) with c_n = E V^n, V = |t + Z| − t, t >= 0; order <= 4."""
    tc, tj = _tail_moments(t, 3 if order >= 3 else 1)
    t1 = tj[1]
    c = [2.0 * t1, 1.0 - 4.0 * tc * t1]
    if order >= 3:
        t3 = tj[3]
        c.append(2.0 * t3 + 6.0 * tc * tc * t1)
    if order >= 4:
        c.append(3.0 - 8.0 * tc * t3 - 8.0 * tc ** 3 * t1)
    return tuple(c[:order])


def _var_v(t: Tensor) -> Tensor:
    """Var V = Var|θ| / σ² = 1 − 4T₁(t + T₁) (in [1 − 2/π, 1])."""
    tc, tj = _tail_moments(t, 1)
    t1 = tj[1]
    return 1.0 - 4.0 * t1 * (tc + t1)


def _mean_v(t: Tensor) -> Tensor:
    """E V = (E|θ| − |μ|)/σ = 2T₁(t) >= 0."""
    return 2.0 * _tail_moments(t, 1)[1][1]


def _log_f(t: Tensor, s: Tensor) -> Tensor:
    """log E e^{sV} = s²/2 + log1p(e^{−2st}Φ(s − t) − Φ(−t − s))."""
    q = torch.exp(-2.0 * s * t) * torch.special.ndtr(s - t) - torch.special.ndtr(-t - s)
    return 0.5 * s * s + torch.log1p(q)


def _log_g(t: Tensor, s: Tensor, log_f_s: Tensor | None = None) -> Tensor:
    """log Var e^{sV}, stable for all s > 0 (direct in log space, or Taylor series for small s).

    ``log_f_s`` may pass in an already computed ``_log_f(t, s)``.
    """
    small = s < _SERIES_MAX_S
    out = torch.empty_like(s)
    big = ~small
    if bool(big.any()):
        # G = F(2s)·(1 − F(s)²/F(2s)); d = 2 log F(s) − log F(2s) = −log(1 + G/F(s)²) < 0.
        tb, sb = t[big], s[big]
        lf = _log_f(tb, sb) if log_f_s is None else log_f_s[big]
        lf2 = _log_f(tb, 2.0 * sb)
        out[big] = lf2 + torch.log(-torch.expm1(2.0 * lf - lf2))
    if bool(small.any()):
        # G/s² = Var V + s(c3 − c1 c2) + s²(14 c4 − 8 c1 c3 − 6 c2²)/24 + O(s³).
        ts, ss = t[small], s[small]
        c1, c2, c3, c4 = _folded_moments(ts, 4)
        k2 = c2 - c1 * c1
        k3 = c3 - c1 * c2
        k4 = (14.0 * c4 - 8.0 * c1 * c3 - 6.0 * c2 * c2) / 24.0
        out[small] = 2.0 * torch.log(ss) + torch.log(k2 + ss * (k3 + ss * k4))
    return out


def _check_name(name: str) -> None:
    if name not in CRITERIA:
        raise ValueError(f"unknown removal criterion {name!r}; expected one of {', '.join(CRITERIA)}")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def score(name: str, mu: Tensor, sigma: Tensor, lam: float = 1.0) -> Tensor:
    """Removal-criterion score of weights θ ~ N(mu, sigma²); higher = keep.

    Args:
        name: one of :data:`CRITERIA`.
        mu, sigma: tensors (broadcastable; sigma >= 0). Computed in float64, returned in the
            promoted floating dtype of the inputs (float32 in, float32 out).
        lam: λ of the exp variants (positive, finite); ignored by the other criteria.

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`CRITERIA`), lam <= 0 or not finite,
            or negative sigma.
    """
    _check_name(name)
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    mu = torch.as_tensor(mu)
    sigma = torch.as_tensor(sigma, device=mu.device)
    out_dtype = torch.promote_types(mu.dtype, sigma.dtype)
    if not out_dtype.is_floating_point:
        out_dtype = torch.get_default_dtype()
    mu, sigma = torch.broadcast_tensors(mu, sigma)
    if bool((sigma < 0).any()):
        raise ValueError("sigma must be non-negative")

    a = mu.to(torch.float64).abs()
    if name == "mean":
        return a.to(out_dtype)
    sd = sigma.to(torch.float64).clamp_min(_SIGMA_MIN)
    t = a / sd
    if name == "snr":
        out = t
    elif name == "E_mean_abs":
        out = sd * (t + _mean_v(t))
    elif name == "SNR_mean_abs":
        out = (t + _mean_v(t)) / torch.sqrt(_var_v(t))
    else:
        s = float(lam) * sd
        log_f = _log_f(t, s)
        if name == "E_exp_mean_abs":
            out = torch.exp(float(lam) * a + log_f)
        else:  # SNR_exp_mean_abs
            out = torch.exp(log_f - 0.5 * _log_g(t, s, log_f))
    return out.to(out_dtype)


def removal_set_iou(a: Tensor, b: Tensor) -> float:
    """Intersection over union of two boolean masks of removed entries (empty union -> 1.0)."""
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise TypeError(f"removal_set_iou expects boolean masks, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    union = int((a | b).sum())
    if union == 0:
        return 1.0
    return int((a & b).sum()) / union


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two score vectors (flattened, same number of entries).

    Ranks are ordinal (stable argsort: tied scores get distinct ranks in order of position, no
    average ranks), so ρ = 1 − 6·Σd²/(n(n² − 1)) exactly. Ties are rare for continuous scores; with
    many ties the value depends on the entries' order. Returns NaN for fewer than 2 entries.
    """
    a = torch.as_tensor(a).flatten()
    b = torch.as_tensor(b).flatten()
    if a.numel() != b.numel():
        raise ValueError(f"score vectors differ in length: {a.numel()} vs {b.numel()}")
    if bool(torch.isnan(a).any()) or bool(torch.isnan(b).any()):
        raise ValueError("spearman: scores contain NaN")
    n = a.numel()
    if n < 2:
        return float("nan")

    def ranks(x: Tensor) -> Tensor:
        r = torch.empty(n, dtype=torch.float64, device=x.device)
        r[torch.argsort(x, stable=True)] = torch.arange(n, dtype=torch.float64, device=x.device)
        return r

    d = ranks(a) - ranks(b.to(a.device))
    return float(1.0 - 6.0 * (d * d).sum() / (n * (float(n) * n - 1.0)))
