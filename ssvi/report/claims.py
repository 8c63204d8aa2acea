"""The paper's claims (reference section 7: C1-C6, plus C5-ood, C5-shift, C5-calibrated and C2-time), one function per
claim in a registry, each one verdict row decided by ssvi.report.verdicts.

Takes ``ClaimData`` (per-run frames of the main comparison, the criteria ablation, the robustness grid and the
evaluation sets; main seeds only) and the config's ``claims`` section; gives one dict per claim: claim, statement,
verdict, k (tested comparisons, the Bonferroni family), family (the per-comparison level), summary, planning number,
definition (the exact rule), tests, and the deciding comparison's effect, ci_low, ci_high, n_a, n_b; ``numbers``
lists every comparison made (claims.json), each with its test, level, verdict and why it was not tested.

A claim function gives comparison specs (``verdicts.Spec``: two sides of per-run values, the bound, the metric), the
exact rule in words, and optionally a combination of its decided comparisons that replaces "every one holds"
(``every``) or "some one holds".
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .flags import CHANCE, NOT_CONVERGED
from .columns import HIGHER_IS_BETTER, HOLDS, INCONCLUSIVE, NOT_EVALUATED, SHORT
from .stats import Sample
from .verdicts import RULE, Side, Spec, all_hold, any_holds, decide_row, deciding, interval_text, tally

CLAIM_DENSITIES = (0.1, 0.05)  # reference section 7, C1
C5_METRICS = ("acc_pct", "nll", "ece", "ece_ssvi")
ENSEMBLE_VARIANT = "ensemble"


@dataclass
class ClaimData:
    """Per-run frames (one row per run; CELL_KEYS with method = the main table's label, seed, variant, run_dir,
    posterior, and the run flags chance_level and not_converged)."""
    main: pd.DataFrame          # main comparison: metrics, train_flops, train_time_s, device
    criteria: pd.DataFrame      # criteria ablation runs: criterion, acc_pct
    robustness: pd.DataFrame    # robustness runs: method, sigma_init, kl_scale, seed, acc_pct
    ood: pd.DataFrame           # CELL_KEYS, ood_set, score, auroc
    shift: pd.DataFrame         # CELL_KEYS, acc_pct averaged over corruptions and severities
    ood_skipped: bool = False   # some run did not evaluate an OOD set (not_evaluated)
    shift_skipped: bool = False


_ARRAYS: dict[int, dict[str, np.ndarray]] = {}  # id(frame) -> its columns as arrays, while the frame lives


def _array(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as a NumPy array, cached for the frame's life: a row has hundreds of comparisons, each
    selecting its runs from the same frames."""
    arrays = _ARRAYS.get(id(frame))
    if arrays is None:
        arrays = _ARRAYS[id(frame)] = {}
        weakref.finalize(frame, _ARRAYS.pop, id(frame), None)
    if column not in arrays:
        arrays[column] = frame[column].to_numpy()
    return arrays[column]


def _mask(frame: pd.DataFrame, where: dict) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        column = _array(frame, key)
        keep &= np.isclose(column.astype(float), float(value), rtol=1e-9, atol=1e-12) if key == "density" \
            else column == value
    return keep


def rows_where(frame: pd.DataFrame, **where) -> pd.DataFrame:
    """The rows matching ``where`` (density compared with a tolerance)."""
    return frame if frame.empty else frame[_mask(frame, where)]


def _flagged(rows: pd.DataFrame, flag: str) -> list[str]:
    if flag not in rows:
        return []
    return [str(name) for name, on in zip(rows.get("run_name", rows.get("run_dir", [])), rows[flag]) if on]


def _side(seeds, variants, values, names, chance, unconverged) -> Side:
    keys = [f"ensemble {s}" if v == ENSEMBLE_VARIANT else int(s) for s, v in zip(seeds, variants)]
    return Side(Sample.of(values, keys), [str(n) for n, on in zip(names, chance) if on],
                [str(n) for n, on in zip(names, unconverged) if on])


def _optional(frame: pd.DataFrame, column: str, default):
    return _array(frame, column) if column in frame else np.full(len(frame), default, dtype=object)


def side_of(rows: pd.DataFrame, column: str) -> Side:
    """A Side from run rows: values by seed (ensembles by 'ensemble <i>', so never paired) and the flagged runs."""
    names = rows["run_name"] if "run_name" in rows else rows.get("run_dir", pd.Series([""] * len(rows)))
    return _side(rows["seed"], rows["variant"] if "variant" in rows else [""] * len(rows), rows[column], names,
                 rows[CHANCE] if CHANCE in rows else [False] * len(rows),
                 rows[NOT_CONVERGED] if NOT_CONVERGED in rows else [False] * len(rows))


def side(frame: pd.DataFrame, column: str, **where) -> Side:
    """The Side of the runs of ``frame`` matching ``where`` (see ``rows_where``)."""
    if frame.empty:
        return Side(Sample.of([]))
    keep = _mask(frame, where)
    names = _array(frame, "run_name") if "run_name" in frame else _optional(frame, "run_dir", "")
    return _side(_array(frame, "seed")[keep], _optional(frame, "variant", "")[keep], _array(frame, column)[keep],
                 names[keep], _optional(frame, CHANCE, False)[keep], _optional(frame, NOT_CONVERGED, False)[keep])


def oriented(metric: str) -> float:
    """+1 when higher is better on ``metric`` (so effect > 0 means the first side is better), else −1."""
    return 1.0 if HIGHER_IS_BETTER[metric.removeprefix("t_")] else -1.0


REGISTRY: dict[str, Callable] = {}
PAPER, BENCHMARK, DECLARED = "paper", "benchmark", "declared"  # the paper's claim, this benchmark's, the config's


def row_result(name: str, source: str, statement: str, specs: list[Spec], definition: str, every: bool,
               params: dict, combine=None, fmt: str = ".2f") -> dict:
    """Decide one verdict row and describe it (the claims table's row, claims.json's entry)."""
    empty_verdict = combine if isinstance(combine, str) else None  # e.g. "not evaluated" when nothing to compare
    row = decide_row(specs, every, params, None if empty_verdict else combine)
    if empty_verdict and not specs:
        row.verdict = empty_verdict
    decider = deciding(row.comparisons, every)
    family = (f"Bonferroni over k = {row.k} tested comparison(s): each interval at {row.level:.2%}" if row.k else
              "no stochastic comparison tested")
    unconverged = sorted({run for c in row.comparisons for run in c["not_converged"]})
    summary = ("no comparison possible (no pair of runs: " + (definition.split(":")[0]) + ")" if not row.comparisons
               else "nothing tested: " + "; ".join(dict.fromkeys(c["not_tested_because"] for c in row.comparisons))
               if decider is None else
               f"{'worst' if every else 'best'}: {decider['what']} = {interval_text(decider, fmt)} "
               f"(bound {decider['bound']}{'; ' + decider['note'] if 'note' in decider else ''}); "
               f"{tally(row.comparisons)}")
    if unconverged:
        summary += f"; {len(unconverged)} run(s) not converged: {', '.join(unconverged[:3])}" + \
            (f" (+{len(unconverged) - 3} more)" if len(unconverged) > 3 else "")
    planning = (f"{row.planning} per side ({row.planning_for})" if row.planning is not None else
                f"unknown ({row.planning_for})" if row.planning_for else
                "unknown: no tested comparison with a known spread" if row.verdict == INCONCLUSIVE else "")
    return {"claim": name, "source": source, "statement": statement, "verdict": row.verdict, "k": row.k,
            "family": family, "tests": ", ".join(row.tests), "summary": summary,
            "definition": f"{definition} {RULE}.",
            **{key: (decider or {}).get(key, math.nan) for key in ("effect", "ci_low", "ci_high", "n_a", "n_b")},
            "planning_seeds": row.planning, "planning": planning, "not_converged_runs": unconverged,
            "numbers": row.comparisons}


def claim(name: str, statement: str, every: bool, fmt: str = ".2f", source: str = PAPER):
    """Register a claim: the function gives (specs, definition, combine or None)."""
    def register(function):
        def decide_claim(data: ClaimData, params: dict) -> dict:
            specs, definition, combine = function(data, params)
            return row_result(name, source, statement, specs, definition, every, params, combine, fmt)
        REGISTRY[name] = decide_claim
        return function
    return register


def blocks(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["dataset"], frame["arch"]))) if not frame.empty else []


def cells_of(frame: pd.DataFrame, method: str) -> list[tuple[str, str, float]]:
    rows = frame[frame["method"] == method] if not frame.empty else frame
    return list(dict.fromkeys(zip(rows["dataset"], rows["arch"], rows["density"]))) if not rows.empty else []


def ssvi_cells(frame: pd.DataFrame) -> list[tuple[str, str, float]]:
    return cells_of(frame, "ssvi")


@claim("C1", "At d ∈ {0.1, 0.05} SSVI accuracy is within 3 points of dense VI", every=True)
def c1(data: ClaimData, params: dict):
    tol, specs = float(params.get("acc_drop_points", 3.0)), []
    for dataset, arch in blocks(data.main):
        dense = side(data.main, "acc_pct", dataset=dataset, arch=arch, method="dense_vi", density=1.0)
        for d in CLAIM_DENSITIES:
            ssvi = side(data.main, "acc_pct", dataset=dataset, arch=arch, method="ssvi", density=d)
            if len(dense) and len(ssvi):
                specs.append(Spec(f"{dataset}/{arch} d = {d:g}: acc(dense VI) − acc(SSVI) (points)", dense, ssvi,
                                  "acc_pct", at_most=tol, keys=dict(dataset=dataset, arch=arch, density=d)))
    definition = (f"For each dataset × arch and each d ∈ {{0.1, 0.05}} with both runs: drop = acc(dense VI) − "
                  f"acc(SSVI, d) in points (default recipe), bound drop ≤ claims.acc_drop_points = {tol:g}; holds: "
                  f"every comparison holds; fails: some fails; else inconclusive.")
    return specs, definition, None


def c2_combine(records: list[dict]) -> str:
    """C2: a dataset × arch block holds if some density holds, fails if every density fails; every block must hold."""
    by_block: dict[tuple, list[str]] = {}
    for r in records:
        by_block.setdefault((r["dataset"], r["arch"]), []).append(r["verdict"])
    return all_hold([any_holds(verdicts) for verdicts in by_block.values()])


@claim("C2", "SSVI training FLOPs are up to 20× lower than dense VI's (≈ 1/d)", every=True, fmt=".3g")
def c2(data: ClaimData, params: dict):
    target, specs = float(params.get("flops_reduction_target", 20.0)), []
    for dataset, arch, d in ssvi_cells(data.main):
        dense = side(data.main, "train_flops", dataset=dataset, arch=arch, method="dense_vi", density=1.0)
        ssvi = side(data.main, "train_flops", dataset=dataset, arch=arch, method="ssvi", density=d)
        claimed = min(target, 1.0 / d)
        if len(dense) and len(ssvi):
            reduction = dense.values.mean() / ssvi.values.mean()
            specs.append(Spec(f"{dataset}/{arch} d = {d:g}: FLOPs(dense VI) − {0.9 * claimed:g} × FLOPs(SSVI)",
                              dense, ssvi, "train_flops", at_least=0.0, scale=0.9 * claimed,
                              keys=dict(dataset=dataset, arch=arch, density=d, reduction=reduction, claimed=claimed,
                                        one_over_d=1.0 / d, reduction_over_claimed=reduction / claimed),
                              note=f"reduction {reduction:.3g}× vs claimed {claimed:g}×"))
    definition = (f"For each dataset × arch and SSVI density d: reduction(d) = train FLOPs(dense VI) / train "
                  f"FLOPs(SSVI, d), claimed(d) = min(claims.flops_reduction_target = {target:g}, 1/d); bound "
                  f"reduction(d) ≥ 0.9 · claimed(d), tested as FLOPs(dense VI) − 0.9 · claimed(d) · FLOPs(SSVI) ≥ 0 "
                  f"(FLOPs are counts: compared exactly). A block holds if some density holds, fails if every density "
                  f"fails; the claim holds if every block holds, fails if some block fails, else inconclusive.")
    return specs, definition, c2_combine


@claim("C2-time", "The FLOPs reduction is also a wall-clock reduction (SSVI trains faster than dense VI)",
       every=True, fmt=".3g")
def c2_time(data: ClaimData, params: dict):
    specs = []
    frame = data.main.assign(log_train_time=np.log(data.main["train_time_s"].astype(float))) \
        if not data.main.empty else data.main
    for dataset, arch, d in ssvi_cells(frame):
        where = dict(dataset=dataset, arch=arch)
        dense_rows = rows_where(frame, **where, method="dense_vi", density=1.0)
        ssvi_rows = rows_where(frame, **where, method="ssvi", density=d)
        if not (len(dense_rows) and len(ssvi_rows)):
            continue
        devices = sorted(set(dense_rows["device"]) | set(ssvi_rows["device"]))
        ratio = float(dense_rows["train_time_s"].mean() / ssvi_rows["train_time_s"].mean())
        specs.append(Spec(f"{dataset}/{arch} d = {d:g}: log train time(dense VI) − log train time(SSVI)",
                          side_of(dense_rows, "log_train_time"), side_of(ssvi_rows, "log_train_time"),
                          "log_train_time", at_least=0.0, keys=dict(**where, density=d, time_ratio=ratio,
                                                                    devices=devices),
                          note=f"time ratio dense VI ÷ SSVI {ratio:.2f}× on {' and '.join(devices)}",
                          untested="the runs trained on different devices" if len(devices) > 1 else ""))
    definition = ("For each dataset × arch × SSVI density: measured training wall-clock (metrics.json "
                  "provenance.wall_time_s), log(time of dense VI) − log(time of SSVI), bound ≥ 0 (SSVI no slower; "
                  "logs, so the effect is the log of the time ratio); not tested when the runs trained on different "
                  "devices; holds: every comparison holds; fails: some fails; else inconclusive.")
    return specs, definition, None


@claim("C3", "SSVI beats the gradual-pruning and post-hoc baselines at equal density", every=True)
def c3(data: ClaimData, params: dict):
    specs = []
    methods = list(dict.fromkeys(data.main["method"])) if not data.main.empty else []
    baselines = [m for m in methods if m == "gradual_pruning" or m.startswith("posthoc")]
    for dataset, arch, d in ssvi_cells(data.main):
        where = dict(dataset=dataset, arch=arch, density=d)
        ssvi = side(data.main, "acc_pct", **where, method="ssvi")
        for baseline in baselines:
            other = side(data.main, "acc_pct", **where, method=baseline)
            if len(other):
                specs.append(Spec(f"{dataset}/{arch} d = {d:g}: acc(SSVI) − acc({baseline}) (points)", ssvi, other,
                                  "acc_pct", at_least=0.0, keys=dict(**where, baseline=baseline)))
    definition = ("For each dataset × arch × density with SSVI and each of gradual_pruning and the post-hoc "
                  "fine-tune variants at that density: acc(SSVI) − acc(baseline) in points, bound ≥ 0; holds: "
                  "every comparison holds; fails: some fails; else inconclusive.")
    return specs, definition, None


def per_seed(robust: pd.DataFrame, method: str, cells: list[tuple], reduce) -> Side:
    """Per seed that ran every cell: ``reduce`` of its accuracies over ``cells`` (a Side indexed by seed)."""
    rows = robust[robust["method"] == method]
    rows = rows[[(s, k) in cells for s, k in zip(rows["sigma_init"], rows["kl_scale"])]]
    complete = rows.groupby("seed")["acc_pct"].count() == len(cells)
    seeds = [int(s) for s in complete[complete].index]
    values = Sample.of([reduce(rows.loc[rows["seed"] == s, "acc_pct"]) for s in seeds], seeds)
    kept = rows[rows["seed"].isin(seeds)]
    return Side(values, _flagged(kept, CHANCE), _flagged(kept, NOT_CONVERGED))


@claim("C4", "SSVI is more robust than dense VI across the hyperparameter grid", every=True)
def c4(data: ClaimData, params: dict):
    robust, specs = data.robustness, []
    cells = {m: set(zip(*(robust.loc[robust["method"] == m, k] for k in ("sigma_init", "kl_scale"))))
             for m in ("dense_vi", "ssvi")} if not robust.empty else {}
    shared = sorted(cells["dense_vi"] & cells["ssvi"]) if cells else []
    if len(shared) >= 2:
        spread = {m: per_seed(robust, m, shared, lambda a: a.max() - a.min()) for m in ("dense_vi", "ssvi")}
        worst = {m: per_seed(robust, m, shared, lambda a: a.min()) for m in ("dense_vi", "ssvi")}
        spread = {m: Side(s.sample, [], s.unconverged) for m, s in spread.items()}  # a collapse is what C4 measures
        worst = {m: Side(s.sample, [], s.unconverged) for m, s in worst.items()}
        specs = [Spec(f"spread (max − min acc over {len(shared)} cells): dense VI − SSVI (points)",
                      spread["dense_vi"], spread["ssvi"], "acc_pct", at_least=0.0,
                      keys=dict(cells=len(shared), aspect="spread")),
                 Spec(f"worst cell acc over {len(shared)} cells: SSVI − dense VI (points)",
                      worst["ssvi"], worst["dense_vi"], "acc_pct", at_least=0.0,
                      keys=dict(cells=len(shared), aspect="worst"))]
    definition = ("Over the σ-init × KL-scale cells where both dense VI and SSVI ran (≥ 2 cells), per seed that "
                  "ran every such cell: spread = max − min accuracy over the cells, worst = min accuracy; bounds "
                  "spread(dense VI) − spread(SSVI) ≥ 0 and worst(SSVI) − worst(dense VI) ≥ 0 (runs at chance level "
                  "count here: breaking down is what the claim measures); holds: both hold; fails: either fails; "
                  "else inconclusive.")
    return specs, definition, None


def versus_dense(frame: pd.DataFrame, metric: str, extra_keys: list[str], label: str) -> list[Spec]:
    """SSVI against dense VI (d = 1) of the same dataset, arch and ``extra_keys``, oriented so > 0 = SSVI better."""
    specs = []
    if frame.empty:
        return specs
    ssvi_rows = frame[frame["method"] == "ssvi"]
    for key in dict.fromkeys(zip(*(ssvi_rows[k] for k in ["dataset", "arch", "density", *extra_keys]))):
        where = dict(zip(["dataset", "arch", "density", *extra_keys], key))
        extra = [str(where[k]) for k in extra_keys]
        ssvi = side(frame, metric, **where, method="ssvi")
        dense = side(frame, metric, **{**where, "density": 1.0}, method="dense_vi")
        if len(ssvi) and len(dense):
            name = " ".join([f"{where['dataset']}/{where['arch']} d = {where['density']:g}", *extra])
            specs.append(Spec(f"{name}: {label} SSVI vs dense VI (> 0: SSVI better)", ssvi, dense, metric,
                              at_least=0.0, sign=oriented(metric),
                              keys=dict(**where, ssvi=float(ssvi.values.mean()), dense_vi=float(dense.values.mean()))))
    return specs


SOME_RULE = "holds: some comparison holds; fails: every comparison fails; else inconclusive"


@claim("C5", "SSVI sometimes matches or beats dense VI on accuracy and uncertainty metrics", every=False, fmt=".4g")
def c5(data: ClaimData, params: dict):
    specs = [s for m in C5_METRICS for s in versus_dense(data.main, m, [], SHORT[m])]
    definition = ("For each dataset × arch × SSVI density and each metric in {acc, NLL, ECE top-label, ECE "
                  f"authors'}}: SSVI − dense VI oriented so that > 0 = SSVI better, bound ≥ 0; {SOME_RULE}.")
    return specs, definition, None


def not_evaluated_verdict(specs: list[Spec], skipped: bool) -> str | None:
    return NOT_EVALUATED if not specs and skipped else None


@claim("C5-ood", "SSVI's OOD detection (AUROC, any score) matches or beats dense VI's at some density", every=False,
       fmt=".4f")
def c5_ood(data: ClaimData, params: dict):
    specs = versus_dense(data.ood, "auroc", ["ood_set", "score"], "AUROC")
    definition = ("For each dataset × arch × SSVI density, OOD set and score (max_prob, neg_entropy, neg_mutual_info; "
                  "higher = more in-distribution): AUROC(SSVI) − AUROC(dense VI), bound ≥ 0; " + SOME_RULE +
                  "; not enough runs: no pair with OOD results (ood_shift.json); not evaluated: the OOD sets were "
                  "skipped (evaluation: skip).")
    return specs, definition, not_evaluated_verdict(specs, data.ood_skipped)


@claim("C5-shift", "SSVI's accuracy under corruption (mean over corruptions and severities) matches or beats dense "
       "VI's at some density", every=False)
def c5_shift(data: ClaimData, params: dict):
    specs = versus_dense(data.shift, "acc_pct", [], "corrupted acc")
    definition = ("For each dataset × arch × SSVI density: corrupted accuracy = per run the mean accuracy over every "
                  "corruption and severity 1–5 (table shift, severity 'all'); SSVI − dense VI, bound ≥ 0; " + SOME_RULE +
                  "; not enough runs: no pair with shift results (ood_shift.json); not evaluated: the shift set was "
                  "skipped (evaluation: skip).")
    return specs, definition, not_evaluated_verdict(specs, data.shift_skipped)


CALIBRATION_METRICS = ("nll", "ece", "ace")  # raw; their temperature-scaled twins are t_nll, t_ece, t_ace


@claim("C5-calibrated", "SSVI's calibration advantage over dense VI survives temperature scaling (SSVI matches or "
       "beats dense VI on NLL, ECE or adaptive ECE after both are temperature-scaled, at some density)", every=False,
       fmt=".4g")
def c5_calibrated(data: ClaimData, params: dict):
    specs = [s for m in CALIBRATION_METRICS for s in versus_dense(data.main, f"t_{m}", [], SHORT[f"t_{m}"])]
    raw = decide_row([s for m in CALIBRATION_METRICS for s in versus_dense(data.main, m, [], SHORT[m])], False, params)
    held = [c["what"].split(":")[0] + f" ({SHORT[c['metric']]})" for c in raw.comparisons if c["verdict"] == HOLDS]
    note = (f"raw advantages that hold (the raw comparisons as one row of k = {raw.k}): {'; '.join(held)}" if held
            else f"no raw calibration advantage of SSVI holds (the raw comparisons as one row of k = {raw.k})")
    for spec in specs:
        spec.note = note
    definition = ("For each dataset × arch × SSVI density and each metric in {NLL, ECE top-label, adaptive ECE} after "
                  "temperature scaling of both SSVI and dense VI (ssvi.temperature: two-fold cross-fitting on halves "
                  f"of the test set, one rule for every method): SSVI − dense VI oriented so that > 0 = SSVI better, "
                  f"bound ≥ 0; {SOME_RULE}. The summary lists which raw (unscaled) advantages held.")
    return specs, definition, None


@claim("C6", "The SNR(|θ|) criterion is at least as good as |μ|", every=True)
def c6(data: ClaimData, params: dict):
    snr, mean = (side(data.criteria, "acc_pct", criterion=c) for c in ("SNR_mean_abs", "mean"))
    specs = [Spec("acc(SNR_mean_abs) − acc(mean) (points)", snr, mean, "acc_pct", at_least=0.0)] \
        if len(snr) and len(mean) else []
    definition = "In the criteria ablation: acc(SNR_mean_abs) − acc(mean) in points, bound ≥ 0."
    return specs, definition, None


ORDER = ["C1", "C2", "C2-time", "C3", "C4", "C5", "C5-ood", "C5-shift", "C5-calibrated", "C6"]


def evaluate_claims(data: ClaimData, config: dict, order: list[str] = ORDER) -> list[dict]:
    """Every claim named in ``order`` (registered with @claim: the paper's here, the benchmark's questions in
    ssvi.report.benchmark) and the config's declared questions."""
    params = config.get("claims") or {}
    return [REGISTRY[name](data, params) for name in order]
