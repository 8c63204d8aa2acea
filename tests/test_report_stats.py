"""The statistics of ssvi.report.stats on constructed seed values with known answers: Welch and paired intervals
computed here from their formulas, exact comparisons of counts, the verdict of an interval against a bound, cell
intervals inside the metric's range, and the planning number's power.

    python -m pytest tests/test_report_stats.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ssvi.report import columns, stats


def welch_by_formula(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(effect, low, high): mean(a) − mean(b) ± t(level, Welch–Satterthwaite df) · sqrt(va/na + vb/nb)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * math.sqrt(se2)
    return ma - mb, ma - mb - half, ma - mb + half


def series(values, seeds=None) -> stats.Sample:
    return stats.Sample.of(values, seeds)


CASES = {  # name: (a, b, bound "effect >= 0", expected verdict); different seeds on the sides: Welch
    "clear hold": ([91.0, 92.0, 93.0, 92.5], [88.0, 89.0, 88.5], columns.HOLDS),
    "clear fail": ([80.0, 81.0, 80.5], [90.0, 89.0, 91.0, 90.5], columns.FAILS),
    "straddle": ([90.0, 92.0, 88.0], [89.0, 91.5, 90.0], columns.INCONCLUSIVE),
}


@pytest.mark.parametrize("name", list(CASES))
def test_welch_interval_and_verdict_when_the_seeds_differ(name):
    a, b, verdict = CASES[name]
    effect, low, high = welch_by_formula(a, b)
    diff = stats.difference(series(a), series(b, [10 + i for i in range(len(b))]), level=0.95)
    assert diff.test == stats.WELCH
    assert (diff.effect, diff.ci_low, diff.ci_high) == pytest.approx((effect, low, high), rel=1e-9)
    assert (diff.n_a, diff.n_b) == (len(a), len(b))
    assert stats.decision(diff, at_least=0.0) == verdict
    # oriented the other way (sign −1): the mirror interval against the mirror bound
    mirror = stats.difference(series(a), series(b, [10 + i for i in range(len(b))]), level=0.95, sign=-1.0)
    assert (mirror.ci_low, mirror.ci_high) == pytest.approx((-high, -low), rel=1e-9)
    assert stats.decision(mirror, at_most=0.0) == verdict


def test_same_seeds_are_paired_on_their_differences():
    # the case: one method 1.389 points below the other on each of three seeds
    a, b = series([98.0, 97.0, 99.0]), series([96.611, 95.611, 97.611])
    diff = stats.difference(a, b, level=0.95)
    assert diff.test == stats.PAIRED and diff.effect == pytest.approx(1.389)
    assert (diff.ci_low, diff.ci_high) == pytest.approx((1.389, 1.389), abs=1e-9)
    welch = welch_by_formula(list(a.values), list(b.values))
    assert welch[1] < 0.5 and stats.decision(diff, at_least=1.0) == columns.HOLDS
    # a paired interval by its formula: mean(d) ± t(0.975, n − 1) sd(d) / sqrt(n)
    a, b = series([1.0, 2.0, 4.0, 3.0]), series([0.5, 1.0, 3.9, 1.0])
    d = np.array([0.5, 1.0, 0.1, 2.0])
    half = scipy_stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    diff = stats.difference(a, b, level=0.95)
    assert (diff.ci_low, diff.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # pairing follows the seeds, not the order
    shuffled = stats.difference(stats.Sample.of(a.values[::-1], a.keys[::-1]), b, level=0.95)
    assert (shuffled.ci_low, shuffled.ci_high) == pytest.approx((diff.ci_low, diff.ci_high))


def test_counts_are_compared_exactly():
    dense, sparse = series([100.0]), series([10.0])
    assert stats.difference(dense, sparse, level=0.95).test == stats.WELCH  # without exact: no spread, no interval
    diff = stats.difference(dense, sparse, level=0.95, scale=9.0, exact=True)
    assert diff.test == stats.EXACT and diff.ci_low == diff.ci_high == pytest.approx(10.0)
    assert stats.decision(diff, at_least=0.0) == columns.HOLDS
    assert stats.decision(stats.difference(dense, sparse, level=0.95, scale=11.0, exact=True),
                          at_least=0.0) == columns.FAILS


def test_one_run_on_a_side_has_no_interval():
    diff = stats.difference(series([99.0]), series([10.0, 11.0, 12.0], [5, 6, 7]), level=0.95)
    assert math.isinf(diff.ci_low) and math.isinf(diff.ci_high)
    assert stats.decision(diff, at_least=0.0) == columns.INCONCLUSIVE


def test_cell_intervals_stay_inside_the_metric_range():
    collapsing = [97.2, 96.9, 62.0, 62.5]  # like SSVI at d = 0.05: a plain t interval runs past 100
    mean, sd = np.mean(collapsing), np.std(collapsing, ddof=1)
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2
    assert mean + half > 100
    assert stats.mean_interval(collapsing, "acc_pct") == pytest.approx((mean - half, 100.0))
    assert stats.mean_interval([0.001, 0.05, 0.002], "ece")[0] == 0.0
    assert stats.mean_interval([0.001, 0.05, 0.002], "t_ece")[0] == 0.0   # the T-scaled twin shares the range
    assert stats.mean_interval([0.001, 0.05, 0.002], "unbounded")[0] < 0
    runs = pd.DataFrame({"cell": ["a"] * 4, "acc_pct": collapsing})
    out = stats.seed_stats(runs, ["cell"], ["acc_pct"]).iloc[0]
    assert out["acc_pct_ci_high"] == 100.0 and out["acc_pct_ci_low"] == pytest.approx(mean - half)


def test_difference_intervals_stay_inside_what_the_metric_range_allows():
    # SSVI's AUROC collapsing on one seed against a steady alternative: the plain paired interval at a row's
    # Bonferroni level runs past ±1, which two AUROCs can never differ by
    ssvi, alternative = series([0.95, 0.30, 0.90]), series([0.96, 0.95, 0.94])
    plain = stats.difference(ssvi, alternative, level=0.99)
    assert plain.test == stats.PAIRED and plain.ci_low < -1
    clipped = stats.within_range(plain, "auroc")
    assert (clipped.ci_low, clipped.ci_high) == (-1.0, min(plain.ci_high, 1.0))
    assert clipped.effect == plain.effect and stats.decision(clipped, at_least=0.0) == stats.decision(plain, at_least=0.0)
    assert stats.within_range(plain, "log_train_time") == plain  # unbounded metrics keep their interval
    one_run = stats.difference(series([0.9]), alternative, level=0.95)
    assert math.isinf(stats.within_range(one_run, "auroc").ci_low)  # no interval stays none


def test_seed_stats_interval_of_the_mean():
    runs = pd.DataFrame({"cell": ["a", "a", "a", "b"], "acc_pct": [90.0, 91.0, 95.0, 80.0]})
    out = stats.seed_stats(runs, ["cell"], ["acc_pct"]).set_index("cell")
    values = [90.0, 91.0, 95.0]
    mean, sd = sum(values) / 3, pd.Series(values).std()
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    interval = (out.loc["a", "acc_pct_ci_low"], out.loc["a", "acc_pct_ci_high"])
    assert interval == pytest.approx((mean - half, mean + half))
    assert out.loc["b", "n"] == 1 and pd.isna(out.loc["b", "acc_pct_ci_low"]) and pd.isna(out.loc["b", "acc_pct_std"])


def test_deciding_power_matches_a_simulated_experiment():
    """The noncentral-t power at n equals the fraction of simulated paired experiments whose interval excludes the
    bound, when the spread is known (its upper bound is the truth here by construction)."""
    rng = np.random.default_rng(0)
    n, sd, delta, level = 6, 2.0, 2.5, 0.99
    ucb = stats.spread_upper_bound(1.0, 3)
    diff = stats.Difference(0.0, 0.0, 0.0, 3, 3, 0.0, 0.0, stats.PAIRED, level, (sd / ucb,))  # its UCB is sd
    power = stats.deciding_power(n, diff, delta, level)
    d = rng.normal(delta, sd, size=(20000, n))
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
    simulated = float(np.mean(d.mean(axis=1) - half > 0))
    assert power == pytest.approx(simulated, abs=0.015)
    needed = stats.planning_seeds([(diff, delta)], level, every=True)
    assert stats.deciding_power(needed, diff, delta, level) >= stats.TARGET_POWER > \
        stats.deciding_power(needed - 1, diff, delta, level)
