"""Seed statistics: cell intervals inside each metric's range, differences of two methods by the test their design
calls for, and the planning number (seeds per side for an 80% chance of deciding a comparison).

Takes per-run values (a ``Sample`` per side: values and the runs' seeds: two sides with the same seeds are
paired, because runs of one seed share initialisation and data order across methods); gives
- ``seed_stats``: one row per group: n, <metric>_mean, _std (ddof = 1), _ci_low, _ci_high (95% Student-t interval
  of the seed mean intersected with the metric's range, ``RANGES``; NaN when n = 1), and n_stale;
- ``difference``: sign · (mean(a) − scale · mean(b)) with its interval at a given level: ``PAIRED`` (one-sample t
  on the per-seed differences, scipy.stats.ttest_1samp) when both sides have the same ≥ 2 seeds, ``WELCH``
  (scipy.stats.ttest_ind, equal_var=False) otherwise, ``EXACT`` (no interval: the quantity is a count, e.g.
  FLOPs) for the metrics of ``EXACT_METRICS``;
- ``decision``: holds / fails / inconclusive of an interval against a bound;
- ``deciding_power`` / ``planning_seeds``: the probability that a comparison is decided at n seeds per side when
  the true effect lies ``delta`` beyond its bound, with the seed spread taken at its ``SPREAD_CONFIDENCE`` upper
  confidence bound, and the smallest n at which that probability reaches ``TARGET_POWER``.

Every rule here is checked by simulation with a known truth in tests/test_verdict_simulation.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as scipy_stats

from .columns import FAILS, HOLDS, INCONCLUSIVE

ALPHA = 0.05                 # family-wise error per verdict row (ssvi.report.verdicts), two-sided
LEVEL = 1 - ALPHA            # the cell intervals' level
NLL_MAX = -math.log(1e-12)   # ssvi.metrics clamps the true-label probability at 1e-12
RANGES = {  # the values a metric can take: intervals are intersected with them
    "acc_pct": (0.0, 100.0), "nll": (0.0, NLL_MAX), "ece": (0.0, 1.0), "ece_ssvi": (0.0, 1.0), "brier": (0.0, 2.0),
    "ace": (0.0, 1.0), "aurc": (0.0, 1.0), "augrc": (0.0, 1.0), "auroc": (0.0, 1.0), "aupr_in": (0.0, 1.0),
    "aupr_out": (0.0, 1.0), "fpr95": (0.0, 1.0), "temperature": (0.05, 20.0),
    "train_flops": (0.0, math.inf), "test_flops": (0.0, math.inf), "train_time_s": (0.0, math.inf),
}
EXACT_METRICS = frozenset({"train_flops", "test_flops"})  # counts, the same for every seed: compared exactly
PAIRED, WELCH, EXACT = "paired t", "Welch t", "exact"
TARGET_POWER = 0.8           # the planning number's probability of deciding
SPREAD_CONFIDENCE = 0.65     # the planning number's spread: its 65% upper confidence bound (chi-square)
MAX_PLANNED_SEEDS = 1000
INTERVAL_NOTE = ("95% interval = Student-t interval of the seed mean (n − 1 degrees of freedom) intersected with the "
                 "metric's range (accuracy 0–100, ECE / AUROC / AURC 0–1, NLL 0–27.6 (probabilities floored at "
                 "1e-12), Brier 0–2); it assumes seed values vary roughly normally")


def metric_range(metric: str) -> tuple[float, float]:
    """The range of ``metric`` (its temperature-scaled twin ``t_<m>`` shares it); unbounded when unknown."""
    return RANGES.get(metric.removeprefix("t_"), (-math.inf, math.inf))


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[~np.isnan(values)]


def mean_interval(values, metric: str = "", level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` at ``level``, intersected with the metric's range (NaN, NaN
    when fewer than 2 values). Intersecting cannot lose coverage: the true mean lies in the range."""
    values = _finite(values)
    if len(values) < 2:
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    low, high = metric_range(metric)
    return float(max(values.mean() - half, low)), float(min(values.mean() + half, high))


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
        intervals = groups[m].apply(lambda v, metric=m: mean_interval(v, metric))
        out[f"{m}_ci_low"] = [low for low, _ in intervals]
        out[f"{m}_ci_high"] = [high for _, high in intervals]
    return out.reset_index()[columns]


@dataclass(frozen=True)
class Difference:
    """sign · (mean(a) − scale · mean(b)) and its interval at ``level`` by ``test``; ``spread``: the seed std of the
    per-seed differences (paired) or of each side (Welch), what the planning number scales."""
    effect: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    test: str
    level: float
    spread: tuple[float, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    """One side's per-run values and their pairing keys (seeds; anything else, e.g. an ensemble's group, never
    matches a seed), NaN values left out."""
    values: np.ndarray
    keys: tuple

    @classmethod
    def of(cls, values, keys=None) -> "Sample":
        values = np.asarray(values, dtype=float)
        keys = tuple(range(len(values))) if keys is None else tuple(keys)
        finite = ~np.isnan(values)
        return cls(values[finite], tuple(k for k, keep in zip(keys, finite) if keep))

    def __len__(self) -> int:
        return len(self.values)


def is_paired(a: Sample, b: Sample) -> bool:
    """Both sides ran the same ≥ 2 seeds (runs of one seed share initialisation and data order across methods)."""
    return len(a) >= 2 and len(a) == len(b) and len(set(a.keys)) == len(a) and set(a.keys) == set(b.keys)


def _oriented(low: float, high: float, sign: float) -> tuple[float, float]:
    return (low, high) if sign > 0 else (-high, -low)


def difference(a: Sample, b: Sample, *, level: float, sign: float = 1.0, scale: float = 1.0,
               exact: bool = False) -> Difference:
    """The difference of the two sides by the test its design calls for: EXACT for counts, PAIRED for the same
    seeds on both sides, WELCH otherwise (infinite interval when a side has n < 2)."""
    values_a, values_b = a.values, b.values
    mean_a = float(values_a.mean()) if len(a) else math.nan
    mean_b = float(values_b.mean()) if len(b) else math.nan
    effect = sign * (mean_a - scale * mean_b)
    if exact:
        return Difference(effect, effect, effect, len(a), len(b), mean_a, mean_b, EXACT, 1.0)
    if is_paired(a, b):
        by_seed = dict(zip(b.keys, values_b))
        per_seed = sign * (values_a - scale * np.array([by_seed[k] for k in a.keys]))
        spread = float(per_seed.std(ddof=1))
        half = t_quantile(0.5 + level / 2, len(per_seed) - 1) * spread / math.sqrt(len(per_seed))
        return Difference(effect, effect - half, effect + half, len(a), len(b), mean_a, mean_b, PAIRED, level, (spread,))
    if len(a) < 2 or len(b) < 2:
        return Difference(effect, -math.inf, math.inf, len(a), len(b), mean_a, mean_b, WELCH, level)
    spreads = (float(values_a.std(ddof=1)), float(scale * values_b.std(ddof=1)))
    var_a, var_b = spreads[0] ** 2 / len(a), spreads[1] ** 2 / len(b)
    if var_a + var_b == 0:
        low = high = effect
    else:  # Welch: the Welch–Satterthwaite degrees of freedom (scipy.stats.ttest_ind(equal_var=False) agrees: tested)
        dof = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
        half = t_quantile(0.5 + level / 2, dof) * math.sqrt(var_a + var_b)
        low, high = _oriented(mean_a - scale * mean_b - half, mean_a - scale * mean_b + half, sign)
    return Difference(effect, low, high, len(a), len(b), mean_a, mean_b, WELCH, level, spreads)


def within_range(diff: Difference, metric: str) -> Difference:
    """``diff``'s interval intersected with the differences the metric's range allows (±(high − low): two AUROCs
    differ by at most 1); like the cells' intervals, this cannot lose coverage. For A − B on one scale only."""
    low, high = metric_range(metric)
    width = high - low
    if not (math.isfinite(width) and math.isfinite(diff.ci_low) and math.isfinite(diff.ci_high)) or diff.test == EXACT:
        return diff  # no interval (a side with n < 2) stays none
    return replace(diff, ci_low=min(max(diff.ci_low, -width), width), ci_high=max(min(diff.ci_high, width), -width))


def decision(diff: Difference, at_least: float | None = None, at_most: float | None = None) -> str:
    """holds: the whole interval satisfies ``effect ≥ at_least`` (or ``≤ at_most``); fails: it violates it;
    inconclusive: it straddles the bound."""
    if math.isnan(diff.ci_low) or math.isnan(diff.ci_high):
        return INCONCLUSIVE
    if at_least is not None:
        return HOLDS if diff.ci_low >= at_least else FAILS if diff.ci_high < at_least else INCONCLUSIVE
    return HOLDS if diff.ci_high <= at_most else FAILS if diff.ci_low > at_most else INCONCLUSIVE


def t_quantile(probability: float, dof: float) -> float:
    return float(special.stdtrit(dof, probability))  # scipy.stats.t.ppf without its per-call overhead


def spread_upper_bound(spread: float, n: int, confidence: float = SPREAD_CONFIDENCE) -> float:
    """Upper confidence bound of a normal std from its estimate on n values (chi-square, n − 1 df)."""
    return spread * math.sqrt((n - 1) / float(special.chdtri(n - 1, confidence)))  # chdtri: inverse survival


def _planning_spreads(diff: Difference) -> tuple[float, ...]:
    """The spreads a plan for ``diff`` alone assumes: each at its upper confidence bound."""
    return _pooled_spreads([(diff, 1.0)])[0]


def _pooled_spreads(items: list[tuple[Difference, float]]) -> list[tuple[float, ...]]:
    """The spreads a plan for several comparisons assumes: their seed spreads in units of their smallest effects,
    pooled (degrees of freedom add up, so a row of many comparisons plans on a steadier estimate than any one of
    them), at the pooled value's upper confidence bound, then back in each comparison's units."""
    squares = dof = 0.0
    for diff, delta in items:
        sizes = (diff.n_a,) if diff.test == PAIRED else (diff.n_a, diff.n_b)
        for spread, n in zip(diff.spread, sizes):
            squares += (n - 1) * (spread / delta) ** 2
            dof += n - 1
    standard = spread_upper_bound(math.sqrt(squares / dof), int(round(dof)) + 1) if dof else math.nan
    return [tuple(standard * delta for _ in diff.spread) for diff, delta in items]


def deciding_power(n: int, diff: Difference, delta: float, level: float, spreads: tuple | None = None) -> float:
    """Probability that the ``level`` interval of a fresh experiment with n seeds per side (same design as ``diff``)
    excludes the bound when the true effect lies ``delta`` beyond it and the spreads are their upper bounds."""
    spreads = _planning_spreads(diff) if spreads is None else spreads
    if diff.test == PAIRED:
        se, dof = spreads[0] / math.sqrt(n), n - 1
    else:
        var_a, var_b = spreads[0] ** 2, spreads[1] ** 2
        se = math.sqrt((var_a + var_b) / n)
        dof = (n - 1) * (var_a + var_b) ** 2 / (var_a ** 2 + var_b ** 2) if var_a + var_b > 0 else n - 1
    if se == 0:
        return 1.0
    critical = t_quantile(0.5 + level / 2, dof)
    return float(1 - special.nctdtr(dof, delta / se, critical))  # noncentral t survival function


def planning_seeds(items: list[tuple[Difference, float]], level: float, every: bool) -> int | None:
    """The smallest n per side (≥ 2) at which the chance of deciding reaches TARGET_POWER, for comparisons given as
    (Difference, smallest effect of interest): of deciding all of them (``every``; independent comparisons) or any
    one (not ``every``); None beyond MAX_PLANNED_SEEDS or when a spread or the effect is unknown."""
    if not items or any(len(d.spread) == 0 or not math.isfinite(delta) for d, delta in items):
        return None

    spreads = _pooled_spreads(items)

    def chance(n: int) -> float:  # rises with n: a bisection finds the smallest n that reaches the target
        powers = [deciding_power(n, d, delta, level, s) for (d, delta), s in zip(items, spreads)]
        return float(np.prod(powers)) if every else 1 - float(np.prod([1 - p for p in powers]))

    low, high = 1, MAX_PLANNED_SEEDS  # chance(low) is taken as below the target, chance(high) must reach it
    if chance(high) < TARGET_POWER:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if chance(middle) >= TARGET_POWER else (middle, high)
    return high


def planning_note(level_text: str) -> str:
    return (f"planning number = seeds per side at which a new experiment decides with probability "
            f"{TARGET_POWER:.0%} if each true effect lies the smallest effect of interest (config claims: "
            f"smallest_effect) beyond its bound; seed spreads pooled over the comparisons planned for (in units of "
            f"their smallest effects) at their {SPREAD_CONFIDENCE:.0%} upper confidence bound (chi-square), same "
            f"tests and {level_text} as now, normal seed values, independent comparisons")
