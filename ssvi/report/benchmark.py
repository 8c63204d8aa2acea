"""The benchmark's own questions and the questions a workflow config declares, decided like the paper's claims (one
verdict row each, ssvi.report.verdicts) but clearly not the paper's: is SSVI better than the cheap alternatives?

    B1-*  SSVI at density d against every point-estimate method (a run whose posterior is "point", e.g. the
          deterministic sparse network) at d: accuracy, and NLL / ECE both raw and both temperature-scaled
    B2-*  SSVI at density D against an ensemble of M runs at D / M (the same active-weight budget; training FLOPs,
          time and predictive samples are not equal and each comparison says by how much): accuracy, NLL, ECE
    B3-*  SSVI at density d against every run cell of the cheap Bayesian alternatives (IVON, last-layer Laplace, MC
          dropout, sparse variational dropout), with their training FLOPs beside: accuracy, NLL, ECE, OOD AUROC
    declared  the config's ``claims: questions:`` entries: method A (at a density, or an ensemble's budget)
          against method B on a metric, with a bound on A − B (see ``declared_questions``)

Each question is one row per metric; every comparison (each dataset × arch × density, each point-estimate method,
each ensemble) must hold for the row to hold, any failure fails it. Oriented so that > 0 means SSVI is better.
"""

from __future__ import annotations

from .claims import BENCHMARK, DECLARED, ClaimData, claim, oriented, row_result, rows_where, side, side_of
from .columns import HIGHER_IS_BETTER, SHORT
from .verdicts import Spec

POINT = "point"
QUESTION_METRICS = {"acc": "acc_pct", "NLL": "nll", "ECE": "ece"}
EVERY_RULE = "holds: every comparison holds; fails: some comparison fails; else inconclusive"


def _cells(frame, method: str) -> list[tuple]:
    rows = frame[frame["method"] == method] if not frame.empty else frame
    return list(dict.fromkeys(zip(rows["dataset"], rows["arch"], rows["density"]))) if not rows.empty else []


def point_methods(frame) -> list[str]:
    """Methods (table labels) whose runs are point estimates."""
    if frame.empty or "posterior" not in frame:
        return []
    return list(dict.fromkeys(frame.loc[frame["posterior"] == POINT, "method"]))


def versus_point_estimates(data: ClaimData, metric: str, params: dict) -> list[Spec]:
    """SSVI against each point-estimate method at the same density, on the same view of both (raw, or T-scaled)."""
    specs = []
    for method in point_methods(data.main):
        for dataset, arch, d in _cells(data.main, "ssvi"):
            where = dict(dataset=dataset, arch=arch, density=d)
            ssvi, other = side(data.main, metric, **where, method="ssvi"), side(data.main, metric, **where, method=method)
            if len(ssvi) and len(other):
                specs.append(Spec(f"{dataset}/{arch} d = {d:g}: {SHORT[metric]} SSVI vs {method} (> 0: SSVI better)",
                                  ssvi, other, metric, at_least=0.0, sign=oriented(metric),
                                  keys=dict(**where, metric=metric, baseline=method)))
    return specs


def budget_note(ssvi_rows, ensemble_rows) -> str:
    """What an ensemble at SSVI's active-weight budget spends beyond it (training FLOPs, time, samples)."""
    ratio = lambda column: ensemble_rows[column].mean() / ssvi_rows[column].mean()  # noqa: E731
    return (f"equal: active weights; not equal: training FLOPs ×{ratio('train_flops'):.2f}, training time "
            f"×{ratio('train_time_s'):.2f}, predictive samples {ensemble_rows['num_samples'].mean():g} vs "
            f"{ssvi_rows['num_samples'].mean():g} (ensemble ÷ SSVI)")


def versus_ensembles(data: ClaimData, metric: str, params: dict) -> list[Spec]:
    """SSVI at density D against each sparse ensemble whose members' densities add up to D."""
    specs = []
    main = data.main
    ensembles = main[(main["variant"] == "ensemble") & (main["ensemble_method"] != "dense_vi")] if not main.empty \
        else main
    for dataset, arch, label, budget in dict.fromkeys(zip(ensembles.get("dataset", []), ensembles.get("arch", []),
                                                          ensembles.get("method", []), ensembles.get("density", []))):
        where = dict(dataset=dataset, arch=arch, density=budget)
        ssvi_rows, ensemble_rows = rows_where(main, **where, method="ssvi"), rows_where(main, **where, method=label)
        if len(ssvi_rows) and len(ensemble_rows):
            specs.append(Spec(f"{dataset}/{arch} budget d = {budget:g}: {SHORT[metric]} SSVI vs {label} "
                              "(> 0: SSVI better)", side_of(ssvi_rows, metric), side_of(ensemble_rows, metric),
                              metric, at_least=0.0, sign=oriented(metric),
                              keys=dict(**where, metric=metric, baseline=label),
                              note=budget_note(ssvi_rows, ensemble_rows)))
    return specs


CHEAP_ALTERNATIVES = ("ivon", "laplace", "mc_dropout", "sparse_vd")  # config claims: cheap_alternatives overrides
OOD_SCORE = "max_prob"  # the one OOD score every method has


def cost_note(ssvi_rows, other_rows) -> str:
    """The alternative's training FLOPs and time beside SSVI's (the question weighs quality against cost)."""
    flops = other_rows["train_flops"].mean() / ssvi_rows["train_flops"].mean()
    time = other_rows["train_time_s"].mean() / ssvi_rows["train_time_s"].mean()
    return f"training FLOPs of the alternative ÷ SSVI's: {flops:.2f}×; training time: {time:.2f}×"


def versus_alternatives(data: ClaimData, metric: str, params: dict) -> list[Spec]:
    """SSVI at each of its densities against every run cell (method, density) of the cheap Bayesian alternatives in
    the same dataset × arch: being at least as good as every one is being at least as good as the best one, without
    picking the best on the same seeds it is then compared on. AUROC: every OOD set, max-probability score."""
    alternatives = list(params.get("cheap_alternatives") or CHEAP_ALTERNATIVES)
    frame, extra = (data.ood[data.ood["score"] == OOD_SCORE], ["ood_set"]) if metric == "auroc" and \
        not data.ood.empty else (data.main, [])
    specs = []
    if frame.empty or data.main.empty:
        return specs
    cells = list(dict.fromkeys(zip(*(frame[k] for k in ["method", "density", "dataset", "arch", *extra]))))
    for dataset, arch, d in _cells(data.main, "ssvi"):
        for method, density, *rest in [c for c in cells if c[0] in alternatives and c[2:4] == (dataset, arch)]:
            more = dict(zip(extra, rest[2:]))
            where = dict(dataset=dataset, arch=arch, **more)
            ssvi = side(frame, metric, **where, method="ssvi", density=d)
            other = side(frame, metric, **where, method=method, density=density)
            if not (len(ssvi) and len(other)):
                continue
            costs = cost_note(rows_where(data.main, dataset=dataset, arch=arch, method="ssvi", density=d),
                              rows_where(data.main, dataset=dataset, arch=arch, method=method, density=density))
            name = " ".join([f"{dataset}/{arch} SSVI d = {d:g} vs {method} d = {density:g}", *map(str, more.values())])
            specs.append(Spec(f"{name}: {SHORT[metric]} (> 0: SSVI better)", ssvi, other, metric,
                              at_least=0.0, sign=oriented(metric),
                              keys=dict(**where, density=d, metric=metric, baseline=method, baseline_density=density),
                              note=costs))
    return specs


QUESTIONS_ASKED = {  # question: (statement, comparisons, metrics, definition); {metric} = the metric's label
    "B1": ("SSVI at density d is at least as good as every point-estimate network at d (the same view of both) on "
           "{metric}", versus_point_estimates,
           {"acc": "acc_pct", "NLL": "nll", "NLL-T": "t_nll", "ECE": "ece", "ECE-T": "t_ece"},
           "For each dataset × arch × density d with SSVI runs and each point-estimate method (posterior 'point', e.g. "
           "deterministic_sparse) at d: {metric} of SSVI − that of the point estimate, both raw or both after "
           "temperature scaling (two-fold cross-fitting on halves of the test set; accuracy is unchanged by it), "
           f"oriented so that > 0 = SSVI better, bound ≥ 0; {EVERY_RULE}."),
    "B2": ("SSVI at density D is at least as good as an ensemble of M sparse runs at D / M (same active-weight "
           "budget) on {metric}", versus_ensembles, QUESTION_METRICS,
           "For each ensemble of the config's ensembles block (M runs of one sparse method at density D / M, "
           "disjoint seed groups, predictive = mean of the members' predictive probabilities) and SSVI at D in "
           "the same dataset × arch: {metric} SSVI − ensemble, oriented so that > 0 = SSVI better, bound ≥ 0; "
           "Welch (an ensemble's seeds are not SSVI's); n = independent ensembles (seed groups); equal is the "
           f"active-weight budget only (each comparison's note gives the FLOPs, time and samples ratios); {EVERY_RULE}."),
    "B3": ("SSVI at density d is at least as good as the best of the cheap Bayesian alternatives (IVON, last-layer "
           "Laplace, MC dropout, sparse variational dropout) on {metric}", versus_alternatives,
           {"acc": "acc_pct", "NLL": "nll", "ECE": "ece", "AUROC": "auroc"},
           "For each dataset × arch, SSVI density d and run cell (method, density) of the cheap Bayesian alternatives "
           "(config claims: cheap_alternatives; default ivon, laplace, mc_dropout, sparse_vd): {metric} of SSVI − "
           "that of the alternative, oriented so that > 0 = SSVI better, bound ≥ 0 (AUROC: every OOD set, "
           "max-probability score); at least as good as every alternative = at least as good as the best, without "
           "choosing the best on the seeds it is compared on; each comparison's note gives the alternative's training "
           f"FLOPs and time against SSVI's; {EVERY_RULE}."),
}


def _register(question: str, name: str, metric: str) -> str:
    statement, comparisons, _, definition = QUESTIONS_ASKED[question]
    label = SHORT[metric]

    @claim(f"{question}-{name}", statement.format(metric=label), every=True, fmt=".4g", source=BENCHMARK)
    def decide(data: ClaimData, params: dict):
        return comparisons(data, metric, params), definition.format(metric=label), None

    return f"{question}-{name}"


QUESTIONS = [_register(question, name, metric) for question, (_, _, metrics, _) in QUESTIONS_ASKED.items()
             for name, metric in metrics.items()]



def _frame_of(data: ClaimData, metric: str):
    """The per-run frame holding ``metric``: OOD metrics in ``ood``, 'shift_acc_pct' in ``shift``, else ``main``."""
    if metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
        return data.ood, metric
    if metric.startswith("shift_"):
        return data.shift, metric.removeprefix("shift_")
    return data.main, metric


def declared_specs(data: ClaimData, question: dict) -> list[Spec]:
    """One comparison per dataset × arch (× OOD set and score) where both sides have runs."""
    frame, column = _frame_of(data, question["metric"])
    if frame.empty:
        return []
    a, b = question["a"], question["b"]
    bound = {k: question[k] for k in ("at_least", "at_most") if k in question}
    blocks = [(d, r) for d, r in dict.fromkeys(zip(frame["dataset"], frame["arch"]))
              if (not question.get("datasets") or d in question["datasets"])
              and (not question.get("archs") or r in question["archs"])]
    extra = [k for k in ("ood_set", "score") if k in frame]
    specs = []
    for dataset, arch in blocks:
        where = dict(dataset=dataset, arch=arch)
        keys = [dict(zip(extra, values)) for values in dict.fromkeys(zip(*(frame[k] for k in extra)))] if extra \
            else [{}]
        for more in keys:
            if any(k in question and question[k] != v for k, v in more.items()):
                continue
            sides = [side(frame, column, **where, **more, method=s["method"],
                          **({"density": s["density"]} if "density" in s else {})) for s in (a, b)]
            if len(sides[0]) and len(sides[1]):
                name = " ".join([f"{dataset}/{arch}", *map(str, more.values())])
                specs.append(Spec(f"{name}: {question['metric']} {_side_name(a)} − {_side_name(b)}", *sides,
                                  column, **bound, keys=dict(**where, **more)))
    return specs


def _side_name(s: dict) -> str:
    return s["method"] + (f" at d = {s['density']:g}" if "density" in s else "")


def declared_questions(data: ClaimData, params: dict) -> list[dict]:
    """The config's ``claims: questions:`` as verdict rows (source 'declared'). An entry:

        - name: klw-vs-dense           # the row's name
          a: {method: dense_vi_klw (kl_factor 0.5), density: 1.0}   # a table label, and its density (optional)
          b: {method: dense_vi, density: 1.0}
          metric: nll                   # a column of the main table, an OOD metric or shift_acc_pct
          at_most: 0.0                  # bound on A − B (or at_least)
          statement: ...                # optional; datasets / archs / ood_set / score narrow it (optional)
    """
    rows = []
    for question in params.get("questions") or []:
        bound = "≥" if "at_least" in question else "≤"
        value = question.get("at_least", question.get("at_most"))
        better = "higher" if HIGHER_IS_BETTER.get(question["metric"].removeprefix("t_").removeprefix("shift_"), True) \
            else "lower"
        statement = question.get("statement") or (f"{question['metric']}: {_side_name(question['a'])} − "
                                                  f"{_side_name(question['b'])} {bound} {value:g} ({better} is better)")
        definition = (f"Declared in the workflow config (claims: questions): for each dataset × arch with runs of both "
                      f"sides: {question['metric']} of A − B (not oriented), bound {bound} {value:g}; {EVERY_RULE}.")
        rows.append(row_result(question["name"], DECLARED, statement, declared_specs(data, question), definition,
                               True, params, None, ".4g"))
    return rows
