"""Verdict rows: one claim of the paper, one benchmark question or one declared question decides its k comparisons
together, with the chance of a false "holds" or "fails" kept at ALPHA = 5% for the row.

A comparison (``Spec``) is sign · (A − scale · B) for two sides of per-run values against a bound. Each is
- **not tested** when a side has fewer than 2 runs (no spread known; counts are exact, so FLOPs need only 1), when a
  side holds a run at chance level (a degenerate run decides nothing), or for a reason its claim gives; it is listed
  and counted but kept out of the row's verdict;
- **exact** for counts (FLOPs): the means decide, no interval, no error;
- otherwise tested by the paired t test on per-seed differences when both sides ran the same seeds, else Welch's.
The k tested comparisons of a row share the family-wise level by Bonferroni: each interval is at 1 − 0.05 / k, so
the row's chance of any false decision, whatever the true effects, is at most 5% (tests/test_verdict_simulation.py
checks it at the paper grid's shape). A comparison holds when its whole interval satisfies the bound, fails when the
whole interval violates it. A row holds when every (or, for "some" rows, some) decided comparison holds and fails
when some (every) one fails, as its definition says; with nothing tested it is "not tested".

An undecided row carries a planning number: the seeds per side at which a new experiment decides every undecided
comparison, and with them the row, with 80% probability if each true effect lies the smallest effect of interest
beyond its bound (ssvi.report.stats; ``row_planning`` says why it does not pick a single comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .columns import FAILS, HOLDS, INCONCLUSIVE, NOT_ENOUGH, NOT_TESTED
from .stats import (ALPHA, EXACT, EXACT_METRICS, LEVEL, MAX_PLANNED_SEEDS, PAIRED, WELCH, Difference, Sample, decision,
                    difference, planning_seeds, within_range)

VERDICT_ORDER = {FAILS: 0, INCONCLUSIVE: 1, HOLDS: 2}
DEFAULT_SMALLEST_EFFECTS = {  # per metric, in its units: the effect a planning number must be able to decide
    "acc_pct": 1.0, "nll": 0.02, "ece": 0.01, "ece_ssvi": 0.01, "ace": 0.01, "brier": 0.01, "aurc": 0.005,
    "augrc": 0.005, "auroc": 0.01, "aupr_in": 0.01, "aupr_out": 0.01, "fpr95": 0.02, "log_train_time": 0.1,
}
RULE = ("each comparison: paired t on per-seed differences when both sides ran the same seeds, Welch t otherwise, "
        "exact for counts (FLOPs); the k tested comparisons of a row share its 5% error by Bonferroni (each interval "
        "at 1 − 0.05/k); holds: the whole interval satisfies the bound; fails: it violates it; not tested: a side "
        "with n < 2 or a run at chance level")


@dataclass
class Side:
    """One side's per-run values keyed by seed (ensembles by 'ensemble <i>': never paired), and its flagged runs."""
    sample: Sample
    degenerate: list[str] = field(default_factory=list)     # runs at chance level
    unconverged: list[str] = field(default_factory=list)    # runs still improving at their last epoch

    @property
    def values(self) -> np.ndarray:
        return self.sample.values

    def __len__(self) -> int:
        return len(self.sample)


@dataclass
class Spec:
    """One comparison before it is decided: effect = sign · (A − scale · B) against ``at_least`` or ``at_most``."""
    what: str
    a: Side
    b: Side
    metric: str                     # the smallest effect of interest and exactness follow it
    at_least: float | None = None
    at_most: float | None = None
    sign: float = 1.0
    scale: float = 1.0
    keys: dict = field(default_factory=dict)
    note: str = ""
    untested: str = ""              # a reason of the claim's own (e.g. runs on different devices)

    @property
    def exact(self) -> bool:
        return self.metric in EXACT_METRICS

    @property
    def bound(self) -> float:
        return self.at_least if self.at_least is not None else self.at_most

    def why_not_tested(self) -> str:
        if self.untested:
            return self.untested
        needed = 1 if self.exact else 2
        if min(len(self.a), len(self.b)) < needed:
            return f"n = {len(self.a)}/{len(self.b)}: a side has fewer than {needed} run(s)"
        degenerate = self.a.degenerate + self.b.degenerate
        if degenerate:
            return f"run(s) at chance level: {', '.join(degenerate)}"
        return ""


def smallest_effect(metric: str, params: dict) -> float:
    """The smallest effect of interest of ``metric`` (config claims: smallest_effect overrides the defaults)."""
    base = metric.removeprefix("t_")
    table = {**DEFAULT_SMALLEST_EFFECTS, **(params.get("smallest_effect") or {})}
    return float(table.get(base, math.nan))


def family_level(k: int) -> float:
    return 1 - ALPHA / max(k, 1)


def decide_comparison(spec: Spec, level: float, params: dict) -> tuple[dict, Difference | None]:
    """One comparison's record (claims.json) and its Difference when it was tested stochastically."""
    why = spec.why_not_tested()
    diff = difference(spec.a.sample, spec.b.sample, level=LEVEL if why else level, sign=spec.sign, scale=spec.scale,
                      exact=spec.exact)
    if spec.scale == 1.0:
        diff = within_range(diff, spec.metric)
    verdict = NOT_TESTED if why else decision(diff, spec.at_least, spec.at_most)
    margin = (diff.ci_low - spec.at_least if spec.at_least is not None else spec.at_most - diff.ci_high)
    planned = None
    if verdict == INCONCLUSIVE:
        planned = planning_seeds([(diff, smallest_effect(spec.metric, params))], level, every=True)
    flags = spec.a.unconverged + spec.b.unconverged
    record = {**spec.keys, "what": spec.what, **diff.as_dict(),
              "bound": f"{'≥' if spec.at_least is not None else '≤'} {spec.bound:g}", "margin": margin,
              "verdict": verdict, "not_tested_because": why, "metric": spec.metric,
              "smallest_effect": smallest_effect(spec.metric, params), "planning_seeds": planned,
              "not_converged": flags, **({"note": spec.note} if spec.note else {})}
    return record, (diff if verdict == INCONCLUSIVE and diff.test in (PAIRED, WELCH) else None)


def all_hold(verdicts: list[str]) -> str:
    """Every decided comparison must hold: any fails -> fails; all hold -> holds."""
    return FAILS if FAILS in verdicts else HOLDS if verdicts and all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def any_holds(verdicts: list[str]) -> str:
    """Some comparison must hold: any holds -> holds; all fail -> fails."""
    return HOLDS if HOLDS in verdicts else FAILS if verdicts and all(v == FAILS for v in verdicts) else INCONCLUSIVE


def row_planning(undecided: list[tuple[dict, Difference]], level: float, params: dict) -> tuple[int | None, str]:
    """(seeds per side, what it is for) for an inconclusive row: the n at which every undecided comparison is decided
    with joint probability TARGET_POWER (independent comparisons, each true effect the smallest effect of interest
    beyond its bound, on either side). Every comparison decided decides the row whatever the directions are; the
    observed side of a comparison cannot pick a shortcut (with a few seeds it is often the wrong side), so a row
    that one comparison alone decides (a fail of an every-row, a hold of a some-row) may need fewer."""
    if not undecided:
        return None, ""
    n = planning_seeds([(d, smallest_effect(r["metric"], params)) for r, d in undecided], level, every=True)
    return n, (f"every one of the {len(undecided)} undecided comparison(s) decided"
               + ("" if n is not None else f": more than {MAX_PLANNED_SEEDS} per side, or no spread known"))


@dataclass
class Row:
    verdict: str
    comparisons: list[dict]
    k: int                  # tested stochastic comparisons: the Bonferroni family
    level: float
    planning: int | None
    planning_for: str
    tests: list[str]


def decide_row(specs: list[Spec], every: bool, params: dict,
               combine: Callable[[list[dict]], str] | None = None) -> Row:
    """Decide a row's comparisons at the family level and combine them (``combine`` overrides all/any)."""
    k = sum(1 for s in specs if not s.exact and not s.why_not_tested())
    level = family_level(k)
    decided = [decide_comparison(spec, level, params) for spec in specs]
    records = [record for record, _ in decided]
    verdicts = [r["verdict"] for r in records if r["verdict"] != NOT_TESTED]
    if not specs:
        verdict = NOT_ENOUGH
    elif not verdicts:
        verdict = NOT_TESTED
    else:
        verdict = combine([r for r in records if r["verdict"] != NOT_TESTED]) if combine else \
            (all_hold if every else any_holds)(verdicts)
    planning, planning_for = (row_planning([(r, d) for r, d in decided if d is not None], level, params)
                              if verdict == INCONCLUSIVE else (None, ""))
    tests = list(dict.fromkeys(r["test"] for r in records if r["verdict"] != NOT_TESTED))
    return Row(verdict, records, k, level, planning, planning_for, tests)


def deciding(comparisons: list[dict], every: bool) -> dict | None:
    """The comparison that decides: the worst decided one for an every-row, the best for a some-row."""
    tested = [c for c in comparisons if c["verdict"] != NOT_TESTED]
    if not tested:
        return None
    key = lambda c: (VERDICT_ORDER.get(c["verdict"], 1), c["margin"])  # noqa: E731
    return min(tested, key=key) if every else max(tested, key=key)


def interval_text(c: dict, fmt: str = ".2f") -> str:
    """'effect [low, high], n = a/b (test)' in the phrase's order of sides."""
    sides = f"n = {c['n_a']}/{c['n_b']}"
    if c["verdict"] == NOT_TESTED or not math.isfinite(c["ci_low"]):
        return f"{c['effect']:{fmt}} [no interval: {c.get('not_tested_because') or sides}]"
    if c["test"] == EXACT:
        return f"{c['effect']:{fmt}} (exact), {sides}"
    return f"{c['effect']:{fmt}} [{c['ci_low']:{fmt}}, {c['ci_high']:{fmt}}], {sides} ({c['test']}, {c['level']:.2%})"


def tally(comparisons: list[dict]) -> str:
    counts = {v: sum(c["verdict"] == v for c in comparisons) for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED)}
    return (f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} inconclusive, "
            f"{counts[NOT_TESTED]} not tested of {len(comparisons)}")
