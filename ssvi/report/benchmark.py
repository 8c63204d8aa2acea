"""The benchmark's own questions, decided like the paper's claims (same Welch interval, same three verdicts, the
exact rule beside each) but clearly not the paper's: is SSVI better than the cheap alternatives at the same cost?

    B1-*  SSVI at density d against the deterministic sparse network at d (RigL-style, point weights),
          temperature-scaled: accuracy, NLL, ECE
    B2-*  SSVI at density D against an ensemble of M runs at D / M (the same active-weight budget), from runs
          the grid already has (ssvi.report.ensembles): accuracy, NLL, ECE

Each question is one claim row per metric; every comparison (each dataset × arch × density, each ensemble) must
hold for the row to hold, any failure fails it. Oriented so that > 0 means SSVI is better.
"""

from __future__ import annotations

import numpy as np

from .claims import BENCHMARK, ClaimData, better_first, claim, compare, values
from .columns import SHORT

DETERMINISTIC = "deterministic_sparse"
QUESTION_METRICS = {"acc": "acc_pct", "NLL": "nll", "ECE": "ece"}
EVERY_RULE = "holds: every comparison holds; fails: some comparison fails; else inconclusive"


def _cells(frame, method: str) -> list[tuple]:
    rows = frame[frame["method"] == method] if not frame.empty else frame
    return list(dict.fromkeys(zip(rows["dataset"], rows["arch"], rows["density"]))) if not rows.empty else []


def versus_deterministic(data: ClaimData, metric: str) -> list[dict]:
    """SSVI's posterior predictive (raw) against the deterministic sparse net's temperature-scaled predictions."""
    scaled = metric if metric == "acc_pct" else f"t_{metric}"  # temperature scaling leaves accuracy unchanged
    comparisons = []
    for dataset, arch, d in _cells(data.main, "ssvi"):
        where = dict(dataset=dataset, arch=arch, density=d)
        ssvi = values(data.main, metric, **where, method="ssvi")
        other = values(data.main, scaled, **where, method=DETERMINISTIC)
        if len(ssvi) and len(other) and not np.isnan(other).all():
            comparisons.append(compare(f"{dataset}/{arch} d = {d:g}: {SHORT[metric]} SSVI vs T-scaled deterministic "
                                       "sparse (> 0: SSVI better)", *better_first(metric, ssvi, other),
                                       at_least=0.0, **where, metric=metric, baseline=DETERMINISTIC))
    return comparisons


def versus_ensembles(data: ClaimData, metric: str) -> list[dict]:
    """SSVI at density D against each sparse ensemble whose members' densities add up to D."""
    comparisons = []
    ensembles = data.main[(data.main["variant"] == "ensemble") & (data.main["ensemble_method"] != "dense_vi")] \
        if not data.main.empty else data.main
    for dataset, arch, label, budget in dict.fromkeys(zip(ensembles.get("dataset", []), ensembles.get("arch", []),
                                                          ensembles.get("method", []), ensembles.get("density", []))):
        where = dict(dataset=dataset, arch=arch, density=budget)
        ssvi = values(data.main, metric, **where, method="ssvi")
        other = values(data.main, metric, **where, method=label)
        if len(ssvi) and len(other) and not np.isnan(other).all():
            comparisons.append(compare(f"{dataset}/{arch} budget d = {budget:g}: {SHORT[metric]} SSVI vs {label} "
                                       "(> 0: SSVI better)", *better_first(metric, ssvi, other), at_least=0.0,
                                       **where, metric=metric, baseline=label))
    return comparisons


QUESTIONS_ASKED = {  # question: (statement, comparisons, definition); {metric} = the metric's label
    "B1": ("SSVI at density d is at least as good as the temperature-scaled deterministic sparse network at d on "
           "{metric}", versus_deterministic,
           "For each dataset × arch × density d with SSVI and deterministic_sparse runs: {metric} of SSVI's posterior "
           "predictive − that of the deterministic sparse network after temperature scaling (two-fold "
           "cross-fitting on halves of the test set; accuracy is unchanged by it), oriented so that > 0 = SSVI "
           f"better, bound ≥ 0; {EVERY_RULE}."),
    "B2": ("SSVI at density D is at least as good as an ensemble of M sparse runs at D / M (same active-weight "
           "budget) on {metric}", versus_ensembles,
           "For each ensemble of the config's ensembles block (M runs of one sparse method at density D / M, "
           "disjoint seed groups, predictive = mean of the members' predictive probabilities) and SSVI at D in "
           "the same dataset × arch: {metric} SSVI − ensemble, oriented so that > 0 = SSVI better, bound ≥ 0; "
           f"n = independent ensembles (seed groups); {EVERY_RULE}."),
}


def _register(question: str, name: str, metric: str) -> str:
    statement, comparisons, definition = QUESTIONS_ASKED[question]
    label = SHORT[metric]

    @claim(f"{question}-{name}", statement.format(metric=label), every=True, fmt=".4g", source=BENCHMARK)
    def decide(data: ClaimData, params: dict):
        return comparisons(data, metric), definition.format(metric=label), None

    return f"{question}-{name}"


QUESTIONS = [_register(question, name, metric) for question in QUESTIONS_ASKED
             for name, metric in QUESTION_METRICS.items()]
