"""The paper's claims (reference section 7: C1-C6, plus C5-ood, C5-shift and C2-time), one function per
claim in a registry, each decided on seed statistics.

Takes ``ClaimData`` (per-run frames of the main comparison, the criteria ablation, the robustness grid
and the evaluation sets) and the config's ``claims`` section; gives one dict per claim: claim, statement,
verdict, summary, definition (the exact rule), test, and the deciding comparison's effect, ci_low,
ci_high, n_a, n_b; ``numbers`` lists every comparison made (claims.json).

Every comparison is the difference of two seed means with its 95% Welch interval (ssvi.report.stats.welch)
against a bound; it holds when the whole interval satisfies the bound, fails when the whole interval
violates it, and is inconclusive otherwise (n = 1 on a side always is). A claim over several comparisons
holds when every one holds (``all_hold``: any failure fails it) or when some one holds (``any_holds``:
it fails when every one fails), as its definition says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .columns import FAILS, HIGHER_IS_BETTER, HOLDS, INCONCLUSIVE, NOT_EVALUATED, SHORT
from .select import close
from .stats import VERDICT_RULE, WELCH_NOTE, all_hold, any_holds, decide, seeds_needed, welch

CLAIM_DENSITIES = (0.1, 0.05)  # reference section 7, C1
C5_METRICS = ("acc_pct", "nll", "ece", "ece_ssvi")
VERDICT_ORDER = {FAILS: 0, INCONCLUSIVE: 1, HOLDS: 2}


@dataclass
class ClaimData:
    """Per-run frames (one row per run; CELL_KEYS with method = the main table's label)."""
    main: pd.DataFrame          # main comparison: metrics, train_flops, train_time_s, device
    criteria: pd.DataFrame      # criteria ablation runs: criterion, acc_pct
    robustness: pd.DataFrame    # robustness runs: method, sigma_init, kl_scale, seed, acc_pct
    ood: pd.DataFrame           # CELL_KEYS, ood_set, score, auroc
    shift: pd.DataFrame         # CELL_KEYS, acc_pct averaged over corruptions and severities
    ood_skipped: bool = False   # some run did not evaluate an OOD set (not_evaluated)
    shift_skipped: bool = False


def values(frame: pd.DataFrame, column: str, **where) -> np.ndarray:
    """``column`` of the rows matching ``where`` (density compared with a tolerance)."""
    if frame.empty:
        return np.array([])
    keep = pd.Series(True, index=frame.index)
    for key, value in where.items():
        keep &= frame[key].map(lambda v: close(v, value)) if key == "density" else frame[key] == value
    return frame.loc[keep, column].to_numpy(dtype=float)


def compare(what: str, a, b, *, at_least: float | None = None, at_most: float | None = None, scale: float = 1.0,
            **keys) -> dict:
    """One comparison: effect = mean(a) − scale · mean(b), its Welch interval, n per side, the bound, verdict."""
    diff = welch(a, b, scale)
    bound = at_least if at_least is not None else at_most
    margin = diff.ci_low - at_least if at_least is not None else at_most - diff.ci_high
    verdict = decide(diff, at_least, at_most)
    needed, projection = seeds_needed(a, b, bound, scale) if verdict == INCONCLUSIVE else (None, "")
    return {**keys, "what": what, **diff.as_dict(), "bound": f"{'≥' if at_least is not None else '≤'} {bound:g}",
            "margin": margin, "verdict": verdict, "seeds_needed": needed, "projection": projection}


def deciding(comparisons: list[dict], every: bool) -> dict | None:
    """The comparison that decides: the worst one for an all-hold claim, the best for a some-holds claim."""
    if not comparisons:
        return None
    key = lambda c: (VERDICT_ORDER.get(c["verdict"], 1), c["margin"])  # noqa: E731
    return min(comparisons, key=key) if every else max(comparisons, key=key)


def interval_text(c: dict, fmt: str = ".2f") -> str:
    return (f"{c['effect']:{fmt}} [{c['ci_low']:{fmt}}, {c['ci_high']:{fmt}}], n = {c['n_a']}/{c['n_b']}"
            if math.isfinite(c["ci_low"]) else f"{c['effect']:{fmt}} [no interval: n = {c['n_a']}/{c['n_b']}]")


def tally(comparisons: list[dict]) -> str:
    counts = {v: sum(c["verdict"] == v for c in comparisons) for v in (HOLDS, FAILS, INCONCLUSIVE)}
    return f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} inconclusive of {len(comparisons)}"


REGISTRY: dict[str, Callable] = {}
GENERIC_RULE = f"{WELCH_NOTE}; per comparison {VERDICT_RULE}"


PAPER, BENCHMARK = "paper", "benchmark"  # a claim of the paper, or a question of this benchmark (not the paper's)


def claim(name: str, statement: str, every: bool, fmt: str = ".2f", source: str = PAPER):
    """Register a claim: the function gives (comparisons, definition, extra numbers) and, optionally, a
    verdict that overrides the combination (``every``: all_hold, else any_holds)."""
    def register(function):
        def decide_claim(data: ClaimData, params: dict) -> dict:
            comparisons, definition, verdict = function(data, params)
            verdict = verdict or (all_hold if every else any_holds)([c["verdict"] for c in comparisons])
            decider = deciding(comparisons, every)
            summary = ("no comparison possible" if decider is None else
                       f"{'worst' if every else 'best'}: {decider['what']} = {interval_text(decider, fmt)} "
                       f"(bound {decider['bound']}{'; ' + decider['note'] if 'note' in decider else ''}); "
                       f"{tally(comparisons)}")
            projection = decider["projection"] if decider is not None and verdict == INCONCLUSIVE else ""
            return {"claim": name, "source": source, "statement": statement, "verdict": verdict, "summary": summary,
                    "definition": f"{definition} {GENERIC_RULE}.", "test": WELCH_NOTE,
                    **{k: (decider or {}).get(k, math.nan) for k in ("effect", "ci_low", "ci_high", "n_a", "n_b")},
                    "seeds_needed": decider.get("seeds_needed") if projection else None, "projection": projection,
                    "numbers": comparisons}
        REGISTRY[name] = decide_claim
        return function
    return register


def blocks(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["dataset"], frame["arch"]))) if not frame.empty else []


def ssvi_cells(frame: pd.DataFrame) -> list[tuple[str, str, float]]:
    rows = frame[frame["method"] == "ssvi"] if not frame.empty else frame
    return list(dict.fromkeys(zip(rows["dataset"], rows["arch"], rows["density"]))) if not rows.empty else []


@claim("C1", "At d ∈ {0.1, 0.05} SSVI accuracy is within 3 points of dense VI", every=True)
def c1(data: ClaimData, params: dict):
    tol, comparisons = float(params.get("acc_drop_points", 3.0)), []
    for dataset, arch in blocks(data.main):
        dense = values(data.main, "acc_pct", dataset=dataset, arch=arch, method="dense_vi", density=1.0)
        for d in CLAIM_DENSITIES:
            ssvi = values(data.main, "acc_pct", dataset=dataset, arch=arch, method="ssvi", density=d)
            if len(dense) and len(ssvi):
                c = compare(f"{dataset}/{arch} d = {d:g}: acc(dense VI) − acc(SSVI) (points)", dense, ssvi,
                            at_most=tol, dataset=dataset, arch=arch, density=d)
                comparisons.append({**c, "drop_points": c["effect"]})
    definition = (f"For each dataset × arch and each d ∈ {{0.1, 0.05}} with both runs: drop = acc(dense VI) − "
                  f"acc(SSVI, d) in points (default recipe), bound drop ≤ claims.acc_drop_points = {tol:g}; holds: "
                  f"every comparison holds; fails: some fails; else inconclusive.")
    return comparisons, definition, None


@claim("C2", "SSVI training FLOPs are up to 20× lower than dense VI's (≈ 1/d)", every=True, fmt=".3g")
def c2(data: ClaimData, params: dict):
    target, comparisons, block_verdicts = float(params.get("flops_reduction_target", 20.0)), [], []
    for dataset, arch in blocks(data.main):
        dense = values(data.main, "train_flops", dataset=dataset, arch=arch, method="dense_vi", density=1.0)
        block = []
        for _, _, d in [c for c in ssvi_cells(data.main) if c[:2] == (dataset, arch)]:
            ssvi = values(data.main, "train_flops", dataset=dataset, arch=arch, method="ssvi", density=d)
            claimed = min(target, 1.0 / d)
            if len(dense) and len(ssvi):
                c = compare(f"{dataset}/{arch} d = {d:g}: FLOPs(dense VI) − {0.9 * claimed:g} × FLOPs(SSVI)",
                            dense, ssvi, at_least=0.0, scale=0.9 * claimed, dataset=dataset, arch=arch, density=d)
                reduction = c["mean_a"] / c["mean_b"]
                block.append({**c, "reduction": reduction, "claimed": claimed, "one_over_d": 1.0 / d,
                              "reduction_over_claimed": reduction / claimed,
                              "note": f"reduction {reduction:.3g}× vs claimed {claimed:g}×"})
        comparisons += block
        if block:
            block_verdicts.append(any_holds([c["verdict"] for c in block]))
    definition = (f"For each dataset × arch and SSVI density d: reduction(d) = train FLOPs(dense VI) / train "
                  f"FLOPs(SSVI, d), claimed(d) = min(claims.flops_reduction_target = {target:g}, 1/d); bound "
                  f"reduction(d) ≥ 0.9 · claimed(d), tested as FLOPs(dense VI) − 0.9 · claimed(d) · FLOPs(SSVI) ≥ 0. "
                  f"A block holds if some density holds, fails if every density fails; the claim holds if every "
                  f"block holds, fails if some block fails, else inconclusive.")
    return comparisons, definition, all_hold(block_verdicts)


@claim("C2-time", "The FLOPs reduction is also a wall-clock reduction (SSVI trains faster than dense VI)",
       every=True, fmt=".3g")
def c2_time(data: ClaimData, params: dict):
    comparisons = []
    for dataset, arch, d in ssvi_cells(data.main):
        where = dict(dataset=dataset, arch=arch)
        dense = values(data.main, "train_time_s", **where, method="dense_vi", density=1.0)
        ssvi = values(data.main, "train_time_s", **where, method="ssvi", density=d)
        if not (len(dense) and len(ssvi)):
            continue
        c = compare(f"{dataset}/{arch} d = {d:g}: train time(dense VI) − train time(SSVI) (s)", dense, ssvi,
                    at_least=0.0, **where, density=d)
        main = data.main[(data.main["dataset"] == dataset) & (data.main["arch"] == arch)]
        devices = set(main.loc[(main["method"] == "dense_vi") | ((main["method"] == "ssvi")
                                                                   & main["density"].map(lambda x: close(x, d))),
                               "device"])
        if len(devices) > 1:
            c["verdict"] = INCONCLUSIVE  # times of different devices do not compare
        ratio = c["mean_a"] / c["mean_b"]
        comparisons.append({**c, "time_ratio": ratio, "devices": sorted(devices),
                            "note": f"time ratio dense VI ÷ SSVI {ratio:.2f}× on {' and '.join(sorted(devices))}"})
    definition = ("For each dataset × arch × SSVI density: measured training wall-clock (metrics.json "
                  "provenance.wall_time_s) of dense VI − SSVI's in seconds, bound ≥ 0 (SSVI no slower); "
                  "inconclusive when the runs trained on different devices; holds: every comparison holds; "
                  "fails: some fails; else inconclusive.")
    return comparisons, definition, None


@claim("C3", "SSVI beats the gradual-pruning and post-hoc baselines at equal density", every=True)
def c3(data: ClaimData, params: dict):
    comparisons = []
    methods = list(dict.fromkeys(data.main["method"])) if not data.main.empty else []
    baselines = [m for m in methods if m == "gradual_pruning" or m.startswith("posthoc")]
    for dataset, arch, d in ssvi_cells(data.main):
        where = dict(dataset=dataset, arch=arch, density=d)
        ssvi = values(data.main, "acc_pct", **where, method="ssvi")
        for baseline in baselines:
            other = values(data.main, "acc_pct", **where, method=baseline)
            if len(other):
                c = compare(f"{dataset}/{arch} d = {d:g}: acc(SSVI) − acc({baseline}) (points)", ssvi, other,
                            at_least=0.0, **where, baseline=baseline)
                comparisons.append({**c, "margin_points": c["effect"]})
    definition = ("For each dataset × arch × density with SSVI and each of gradual_pruning and the post-hoc "
                  "fine-tune variants at that density: acc(SSVI) − acc(baseline) in points, bound ≥ 0; holds: "
                  "every comparison holds; fails: some fails; else inconclusive.")
    return comparisons, definition, None


def per_seed(robust: pd.DataFrame, method: str, cells: list[tuple], reduce) -> np.ndarray:
    """Per seed that ran every cell: ``reduce`` of its accuracies over ``cells``."""
    rows = robust[robust["method"] == method]
    rows = rows[[(s, k) in cells for s, k in zip(rows["sigma_init"], rows["kl_scale"])]]
    complete = rows.groupby("seed")["acc_pct"].count() == len(cells)
    return np.array([reduce(rows.loc[rows["seed"] == s, "acc_pct"]) for s in complete[complete].index], dtype=float)


@claim("C4", "SSVI is more robust than dense VI across the hyperparameter grid", every=True)
def c4(data: ClaimData, params: dict):
    robust, comparisons = data.robustness, []
    cells = {m: set(zip(*(robust.loc[robust["method"] == m, k] for k in ("sigma_init", "kl_scale"))))
             for m in ("dense_vi", "ssvi")} if not robust.empty else {}
    shared = sorted(cells["dense_vi"] & cells["ssvi"]) if cells else []
    if len(shared) >= 2:
        spread = {m: per_seed(robust, m, shared, lambda a: a.max() - a.min()) for m in ("dense_vi", "ssvi")}
        worst = {m: per_seed(robust, m, shared, lambda a: a.min()) for m in ("dense_vi", "ssvi")}
        comparisons = [
            compare(f"spread (max − min acc over {len(shared)} cells): dense VI − SSVI (points)",
                    spread["dense_vi"], spread["ssvi"], at_least=0.0, cells=len(shared), aspect="spread"),
            compare(f"worst cell acc over {len(shared)} cells: SSVI − dense VI (points)",
                    worst["ssvi"], worst["dense_vi"], at_least=0.0, cells=len(shared), aspect="worst")]
    definition = ("Over the σ-init × KL-scale cells where both dense VI and SSVI ran (≥ 2 cells), per seed that "
                  "ran every such cell: spread = max − min accuracy over the cells, worst = min accuracy; bounds "
                  "spread(dense VI) − spread(SSVI) ≥ 0 and worst(SSVI) − worst(dense VI) ≥ 0; holds: both hold; "
                  "fails: either fails; else inconclusive.")
    return comparisons, definition, None


def better_first(metric: str, ssvi, dense):
    """(a, b) such that mean(a) − mean(b) > 0 means SSVI is better on ``metric``."""
    return (ssvi, dense) if HIGHER_IS_BETTER[metric] else (dense, ssvi)


def matches_dense(frame: pd.DataFrame, metric: str, extra_keys: list[str], label: str) -> list[dict]:
    """SSVI vs dense VI (d = 1) of the same dataset, arch and ``extra_keys``, oriented so > 0 = SSVI better."""
    comparisons = []
    if frame.empty:
        return comparisons
    ssvi_rows = frame[frame["method"] == "ssvi"]
    for key in dict.fromkeys(zip(*(ssvi_rows[k] for k in ["dataset", "arch", "density", *extra_keys]))):
        where = dict(zip(["dataset", "arch", "density", *extra_keys], key))
        extra = {k: where[k] for k in extra_keys}
        ssvi = values(frame, metric, **where, method="ssvi")
        dense = values(frame, metric, **{**where, "density": 1.0}, method="dense_vi")
        if len(ssvi) and len(dense) and not (np.isnan(ssvi).all() or np.isnan(dense).all()):
            name = " ".join([f"{where['dataset']}/{where['arch']} d = {where['density']:g}", *map(str, extra.values())])
            c = compare(f"{name}: {label} SSVI vs dense VI (> 0: SSVI better)", *better_first(metric, ssvi, dense),
                        at_least=0.0, **where, metric=metric)
            comparisons.append({**c, "ssvi": float(np.nanmean(ssvi)), "dense_vi": float(np.nanmean(dense))})
    return comparisons


SOME_RULE = "holds: some comparison holds; fails: every comparison fails; else inconclusive"


@claim("C5", "SSVI sometimes matches or beats dense VI on accuracy and uncertainty metrics", every=False, fmt=".4g")
def c5(data: ClaimData, params: dict):
    comparisons = [c for m in C5_METRICS for c in matches_dense(data.main, m, [], SHORT[m])]
    definition = ("For each dataset × arch × SSVI density and each metric in {acc, NLL, ECE top-label, ECE "
                  f"authors'}}: SSVI − dense VI oriented so that > 0 = SSVI better, bound ≥ 0; {SOME_RULE}.")
    return comparisons, definition, None


def not_evaluated_verdict(comparisons: list[dict], skipped: bool) -> str | None:
    return NOT_EVALUATED if not comparisons and skipped else None


@claim("C5-ood", "SSVI's OOD detection (AUROC, any score) matches or beats dense VI's at some density", every=False,
       fmt=".4f")
def c5_ood(data: ClaimData, params: dict):
    comparisons = matches_dense(data.ood, "auroc", ["ood_set", "score"], "AUROC")
    definition = ("For each dataset × arch × SSVI density, OOD set and score (max_prob, neg_entropy, neg_mutual_info; "
                  "higher = more in-distribution): AUROC(SSVI) − AUROC(dense VI), bound ≥ 0; " + SOME_RULE +
                  "; not enough runs: no pair with OOD results (ood_shift.json); not evaluated: the OOD sets were "
                  "skipped (evaluation: skip).")
    return comparisons, definition, not_evaluated_verdict(comparisons, data.ood_skipped)


@claim("C5-shift", "SSVI's accuracy under corruption (mean over corruptions and severities) matches or beats dense "
       "VI's at some density", every=False)
def c5_shift(data: ClaimData, params: dict):
    comparisons = matches_dense(data.shift, "acc_pct", [], "corrupted acc")
    definition = ("For each dataset × arch × SSVI density: corrupted accuracy = per run the mean accuracy over every "
                  "corruption and severity 1–5 (table shift, severity 'all'); SSVI − dense VI, bound ≥ 0; " + SOME_RULE +
                  "; not enough runs: no pair with shift results (ood_shift.json); not evaluated: the shift set was "
                  "skipped (evaluation: skip).")
    return comparisons, definition, not_evaluated_verdict(comparisons, data.shift_skipped)


CALIBRATION_METRICS = ("nll", "ece", "ace")  # raw; their temperature-scaled twins are t_nll, t_ece, t_ace


@claim("C5-calibrated", "SSVI's calibration advantage over dense VI survives temperature scaling (SSVI matches or "
       "beats dense VI on NLL, ECE or adaptive ECE after both are temperature-scaled, at some density)", every=False,
       fmt=".4g")
def c5_calibrated(data: ClaimData, params: dict):
    comparisons = [c for m in CALIBRATION_METRICS for c in matches_dense(data.main, f"t_{m}", [], SHORT[f"t_{m}"])]
    raw = [c for m in CALIBRATION_METRICS for c in matches_dense(data.main, m, [], SHORT[m])]
    held = [c["what"].split(":")[0] + f" ({SHORT[c['metric']]})" for c in raw if c["verdict"] == HOLDS]
    note = (f"raw advantages (C5's comparisons that hold): {'; '.join(held)}" if held else
            "no raw calibration advantage of SSVI holds (C5)")
    comparisons = [{**c, "note": note} for c in comparisons]
    definition = ("For each dataset × arch × SSVI density and each metric in {NLL, ECE top-label, adaptive ECE} after "
                  "temperature scaling of both SSVI and dense VI (ssvi.temperature: two-fold cross-fitting on halves "
                  f"of the test set, one rule for every method): SSVI − dense VI oriented so that > 0 = SSVI better, "
                  f"bound ≥ 0; {SOME_RULE}. The summary lists which raw (unscaled) advantages held.")
    return comparisons, definition, None


@claim("C6", "The SNR(|θ|) criterion is at least as good as |μ|", every=True)
def c6(data: ClaimData, params: dict):
    snr, mean = (values(data.criteria, "acc_pct", criterion=c) for c in ("SNR_mean_abs", "mean"))
    comparisons = [compare("acc(SNR_mean_abs) − acc(mean) (points)", snr, mean, at_least=0.0)] \
        if len(snr) and len(mean) else []
    definition = "In the criteria ablation: acc(SNR_mean_abs) − acc(mean) in points, bound ≥ 0."
    return comparisons, definition, None


ORDER = ["C1", "C2", "C2-time", "C3", "C4", "C5", "C5-ood", "C5-shift", "C5-calibrated", "C6"]


def evaluate_claims(data: ClaimData, config: dict, order: list[str] = ORDER) -> list[dict]:
    """Every claim named in ``order`` (registered with @claim: the paper's here, the benchmark's questions in
    ssvi.report.benchmark)."""
    params = config.get("claims") or {}
    return [REGISTRY[name](data, params) for name in order]
