"""The interval and verdict rule of ssvi.report.stats on constructed seed values with known answers: a
clear hold, a clear fail, a straddle, n = 1; the expected Welch interval is computed here from the formula.

    python -m pytest tests/test_report_stats.py -q
"""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from ssvi.report import columns, stats


def welch_by_formula(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(effect, low, high): mean(a) − mean(b) ± t(0.975, Welch–Satterthwaite df) · sqrt(va/na + vb/nb)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(se2)
    return ma - mb, ma - mb - half, ma - mb + half


CASES = {  # name: (a, b, bound "effect >= 0", expected verdict)
    "clear hold": ([91.0, 92.0, 93.0, 92.5], [88.0, 89.0, 88.5], columns.HOLDS),
    "clear fail": ([80.0, 81.0, 80.5], [90.0, 89.0, 91.0, 90.5], columns.FAILS),
    "straddle": ([90.0, 92.0, 88.0], [89.0, 91.5, 90.0], columns.INCONCLUSIVE),
}


@pytest.mark.parametrize("name", list(CASES))
def test_welch_interval_and_verdict(name):
    a, b, verdict = CASES[name]
    effect, low, high = welch_by_formula(a, b)
    diff = stats.welch(a, b)
    assert (diff.effect, diff.ci_low, diff.ci_high) == pytest.approx((effect, low, high), rel=1e-9)
    assert (diff.n_a, diff.n_b) == (len(a), len(b))
    assert stats.decide(diff, at_least=0.0) == verdict
    # the same interval against an upper bound: b − a ≤ 0 is the mirror claim
    assert stats.decide(stats.welch(b, a), at_most=0.0) == verdict


def test_the_straddle_really_straddles():
    _, low, high = welch_by_formula(*CASES["straddle"][:2])
    assert low < 0 < high


def test_n_equal_1_is_always_inconclusive():
    diff = stats.welch([99.0], [10.0, 11.0, 12.0])
    assert diff.effect == pytest.approx(88.0) and diff.n_a == 1
    assert math.isinf(diff.ci_low) and math.isinf(diff.ci_high)
    assert stats.decide(diff, at_least=0.0) == columns.INCONCLUSIVE
    assert stats.decide(stats.welch([5.0, 6.0], [1.0]), at_most=100.0) == columns.INCONCLUSIVE


def test_scaled_difference_tests_a_ratio_bound():
    dense, sparse = [100.0, 100.0], [10.0, 10.0]        # deterministic: a zero-width interval
    assert stats.decide(stats.welch(dense, sparse, scale=9.0), at_least=0.0) == columns.HOLDS   # ratio 10 >= 9
    assert stats.decide(stats.welch(dense, sparse, scale=11.0), at_least=0.0) == columns.FAILS  # 10 < 11


def test_combining_comparisons():
    h, f, i = columns.HOLDS, columns.FAILS, columns.INCONCLUSIVE
    assert stats.all_hold([h, h]) == h and stats.all_hold([h, i]) == i and stats.all_hold([i, f, h]) == f
    assert stats.any_holds([f, h]) == h and stats.any_holds([f, i]) == i and stats.any_holds([f, f]) == f
    assert stats.all_hold([]) == stats.any_holds([]) == columns.NOT_ENOUGH


def test_seed_stats_interval_of_the_mean():
    import pandas as pd
    runs = pd.DataFrame({"cell": ["a", "a", "a", "b"], "acc_pct": [90.0, 91.0, 95.0, 80.0]})
    out = stats.seed_stats(runs, ["cell"], ["acc_pct"]).set_index("cell")
    values = [90.0, 91.0, 95.0]
    mean, sd = sum(values) / 3, pd.Series(values).std()
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    interval = (out.loc["a", "acc_pct_ci_low"], out.loc["a", "acc_pct_ci_high"])
    assert interval == pytest.approx((mean - half, mean + half))
    assert out.loc["b", "n"] == 1 and pd.isna(out.loc["b", "acc_pct_ci_low"]) and pd.isna(out.loc["b", "acc_pct_std"])
