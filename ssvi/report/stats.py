"""Seed statistics: per-cell summaries for the tables and Welch intervals with three-way verdicts for the
claims.

Takes per-run frames (one row per run, a column per metric); gives
- ``seed_stats``: one row per group: n, <metric>_mean, _std (ddof = 1), _ci_low, _ci_high (95% t interval
  of the mean, n − 1 degrees of freedom; NaN when n = 1), and n_stale (runs marked stale);
- ``welch``: the difference of two seed means with its 95% Welch interval (scipy.stats.ttest_ind,
  equal_var=False), n per side;
- ``decide`` / ``all_hold`` / ``any_holds``: holds (the whole interval satisfies the claim's bound), fails
  (the whole interval violates it), inconclusive (it straddles the bound; n = 1 on a side always is);
- ``seeds_needed``: for an inconclusive comparison, a projection of the seeds per side at which the 95% Welch
  interval would exclude the bound if the observed effect and spreads stayed as they are.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .columns import FAILS, HOLDS, INCONCLUSIVE, NOT_ENOUGH

LEVEL = 0.95
WELCH_NOTE = ("95% interval of the difference of seed means from Welch's t (scipy.stats.ttest_ind, "
              "equal_var=False)")
VERDICT_RULE = ("holds: the whole interval satisfies the bound; fails: the whole interval violates it; "
                "inconclusive: it straddles the bound, or a side has n = 1")
MAX_PROJECTED_SEEDS = 100_000
PROJECTION_NOTE = ("seeds needed (a projection, not a measurement): the smallest n per side, at least the larger "
                   "side's current n, at which the 95% Welch interval of the difference would exclude the bound "
                   "if the observed effect δ and seed stds s_a, s_b stayed as they are: t(0.975, ν) · "
                   "sqrt((s_a² + k² s_b²) / n) < |δ − bound|, ν = (n − 1)(s_a² + k² s_b²)² / (s_a⁴ + k⁴ s_b⁴) "
                   "(k: the scale of a ratio bound, else 1); none when the effect sits on the bound; unknown when a "
                   "side has n = 1 (no spread known). To act on it, add seeds to the config block the comparison's "
                   "runs come from (seeds, arch_seeds or the study's own seeds)")


def mean_interval(values) -> tuple[float, float]:
    """95% t interval of the mean of ``values`` (NaN, NaN when fewer than 2)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + LEVEL / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def seed_stats(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of ``keys``: n, n_stale and <metric>_mean, _std, _ci_low, _ci_high."""
    columns = [*keys, "n", "n_stale",
               *[f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci_low", "ci_high")]]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    groups = runs.groupby(keys, sort=False, dropna=False)
    out = groups.size().rename("n").to_frame()
    out["n_stale"] = groups["stale"].sum().astype(int) if "stale" in runs else 0
    for m in metrics:
        out[f"{m}_mean"] = groups[m].mean()
        out[f"{m}_std"] = groups[m].std(ddof=1)
        intervals = groups[m].apply(mean_interval)
        out[f"{m}_ci_low"] = [low for low, _ in intervals]
        out[f"{m}_ci_high"] = [high for _, high in intervals]
    return out.reset_index()[columns]


@dataclass(frozen=True)
class Difference:
    """mean(a) − scale · mean(b) over seeds and its 95% Welch interval (infinite when a side has n < 2)."""
    effect: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float

    def as_dict(self) -> dict:
        return asdict(self)


def welch(a, b, scale: float = 1.0) -> Difference:
    """Welch's t interval of mean(a) − scale · mean(b) (NaN values dropped). ``scale`` turns a ratio bound
    mean(a) / mean(b) ≥ k into the difference bound mean(a) − k · mean(b) ≥ 0."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    mean_a = float(a.mean()) if len(a) else math.nan
    mean_b = float(b.mean()) if len(b) else math.nan
    effect = mean_a - scale * mean_b
    if len(a) < 2 or len(b) < 2:
        low, high = -math.inf, math.inf
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # identical values (e.g. FLOPs): a zero-width interval
            ci = scipy_stats.ttest_ind(a, scale * b, equal_var=False).confidence_interval(LEVEL)
        low, high = float(ci.low), float(ci.high)
    return Difference(effect, low, high, len(a), len(b), mean_a, mean_b)


def seeds_needed(a, b, bound: float, scale: float = 1.0) -> tuple[int | None, str]:
    """(n, text): the projected seeds per side that would decide the comparison ``mean(a) − scale · mean(b)``
    against ``bound`` (see PROJECTION_NOTE); n is None when no projection exists (text says why)."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return None, "unknown: a side has n = 1 (no spread known)"
    gap = abs(float(a.mean() - scale * b.mean()) - bound)
    var_a, var_b = float(a.var(ddof=1)), float(scale**2 * b.var(ddof=1))
    if gap == 0:
        return None, "none: the effect sits on the bound"
    if var_a + var_b == 0:
        return max(len(a), len(b)), "any n: no spread"
    for n in range(max(len(a), len(b), 2), MAX_PROJECTED_SEEDS + 1):
        dof = (n - 1) * (var_a + var_b) ** 2 / (var_a**2 + var_b**2)
        if scipy_stats.t.ppf(0.5 + LEVEL / 2, dof) * math.sqrt((var_a + var_b) / n) < gap:
            return n, f"{n} per side"
    return None, f"more than {MAX_PROJECTED_SEEDS} per side"


def decide(diff: Difference, at_least: float | None = None, at_most: float | None = None) -> str:
    """The verdict of the bound ``effect ≥ at_least`` or ``effect ≤ at_most`` on ``diff``'s interval."""
    if diff.n_a < 2 or diff.n_b < 2 or math.isnan(diff.ci_low):
        return INCONCLUSIVE
    if at_least is not None:
        return HOLDS if diff.ci_low >= at_least else FAILS if diff.ci_high < at_least else INCONCLUSIVE
    return HOLDS if diff.ci_high <= at_most else FAILS if diff.ci_low > at_most else INCONCLUSIVE


def all_hold(verdicts: list[str]) -> str:
    """Every comparison must hold: any fails -> fails; all hold -> holds; none -> not enough runs."""
    if not verdicts:
        return NOT_ENOUGH
    return FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def any_holds(verdicts: list[str]) -> str:
    """Some comparison must hold: any holds -> holds; all fail -> fails; none -> not enough runs."""
    if not verdicts:
        return NOT_ENOUGH
    return HOLDS if HOLDS in verdicts else FAILS if all(v == FAILS for v in verdicts) else INCONCLUSIVE
