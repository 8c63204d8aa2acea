"""Tables and claim verdicts from finished runs. Reads result files only (metrics.json, subspace.json,
ood_shift.json); never trains.

    python workflow/scripts/aggregate.py --config config/config.yaml --out results/tables [RUN_DIR ...]
        [--expected results/expected/paper.yaml] [--allow-missing] [--require-eval]

Without RUN_DIRs every run of the config's grid (``workflow/scripts/grid.py``) is read from
``<results_dir>/runs``. A run dir without ``metrics.json`` is an error naming it, unless ``--allow-missing``.
A finished run's ``ood_shift.json`` (``python -m ssvi evaluate``) is read when present; a run without it has
no OOD / shift values, unless ``--require-eval``, which makes it an error naming the runs.

Each table ``<name>`` is written three times into ``--out``: ``<name>.csv`` holds the numbers (mean and
std in separate columns; what the figure scripts read), ``<name>.md`` and ``<name>.tex`` the display
("mean ± std" cells) under a caption naming the ECE variants, the FLOPs unit and the number of seeds.

    main                  the paper's Table 1 layout: dataset x arch blocks, method x density rows, paper values
    paper_comparison      every entry of the expected-values file: ours, paper, ours - paper, verdict
    density_sweep         long format: dataset, arch, method, density, metric, mean, std, n
    criteria              criteria ablation: SSVI at the ablation density, one row per removal criterion
    iou_{start,middle,end}, spearman_{start,middle,end}
                          6x6 criteria overlap matrices of the ablation runs' subspace updates
    criteria_vs_mean      per criterion: IoU of its removed set with the |mu| criterion's, start/middle/end
    robustness            method x sigma_init x kl_scale grid;  robustness_spread: spread per method
    ood                   OOD detection, default recipe: CSV one row per dataset x arch x method x density x OOD
                          set x score (auroc/aupr/fpr95 mean, std); MD/TEX one row per cell, a column per
                          (OOD set, score, metric)
    shift                 distribution shift: dataset x arch x method x density x severity (1-5, and "all" =
                          mean over every corruption and severity), metrics averaged over corruptions
    shift_corruptions     distribution shift per corruption, averaged over severities
    claims                C1-C6 of the reference (section 7), plus C5-ood and C5-shift: verdict, numbers,
                          exact rule (+ claims.json)
    runs.csv              one row per run (CSV only; column evaluated: the run has ood_shift.json)

Conventions: accuracy in percent; std over seeds with ddof = 1, empty in CSV and shown as "—" when
n = 1; FLOPs are FLOPs (2 per multiply-add), not multiply-adds (MACs). OOD and shift values are first
reduced per run (mean over corruptions / severities), then summarised over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from deepdiff import DeepDiff

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parents[1]
for _path in (str(REPO), str(SCRIPTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import grid  # noqa: E402  (workflow/scripts/grid.py: the one place runs and paths are defined)

log = logging.getLogger("aggregate")

METRICS_FILE, SUBSPACE_FILE, EVAL_FILE = "metrics.json", "subspace.json", "ood_shift.json"
DEFAULT_EXPECTED = REPO / "results" / "expected" / "paper.yaml"

# ---- metrics: column name -> display header, number format, direction --------------------------------
METRICS = ["acc_pct", "nll", "ece", "ece_ssvi", "brier"]
FLOPS = ["train_flops", "test_flops"]
LABELS = {
    "acc_pct": "acc (%)",
    "nll": "NLL",
    "ece": "ECE (top-label L1, 15 bins)",
    "ece_ssvi": "ECE (authors', uncertainty-calibration)",
    "brier": "Brier",
    "train_flops": "train FLOPs",
    "test_flops": "test FLOPs",
    "auroc": "AUROC",
    "aupr": "AUPR",
    "fpr95": "FPR95",
}
FORMATS = {"acc_pct": ".2f", "nll": ".4f", "ece": ".4f", "ece_ssvi": ".4f", "brier": ".4f",
           "train_flops": ".3g", "test_flops": ".3g", "auroc": ".4f", "aupr": ".4f", "fpr95": ".4f"}
SHORT = {"acc_pct": "acc", "nll": "NLL", "ece": "ECE", "ece_ssvi": "ECE (authors')", "brier": "Brier"}
HIGHER_IS_BETTER = {"acc_pct": True, "nll": False, "ece": False, "ece_ssvi": False, "brier": False,
                    "auroc": True, "aupr": True, "fpr95": False}
OOD_METRICS = ["auroc", "aupr", "fpr95"]
OOD_SCORES = ["max_prob", "neg_entropy", "neg_mutual_info"]  # ssvi/shift.py's order; unknown scores follow
SEVERITY_ALL = "all"  # the shift table's row: mean over every corruption and severity
# keys of the expected-values file -> our columns ("acc" there is in percent, like the paper's table)
EXPECTED_METRICS = {"acc": "acc_pct", "nll": "nll", "ece": "ece", "ece_ssvi": "ece_ssvi", "brier": "brier"}
DEFAULT_TOLERANCES = {"acc": 1.0, "nll": 0.05, "ece": 0.01, "ece_ssvi": 0.01, "brier": 0.01}

ECE_NOTE = ("ECE = top-label L1 ECE, 15 equal-width bins (Guo et al. 2017); ECE (authors') = "
            "uncertainty-calibration get_calibration_error defaults (class-wise, debiased L2, 15 equal-mass bins)")
FLOPS_NOTE = ("FLOPs are FLOPs (2 per multiply-add), not MACs; train FLOPs = whole training run (post-hoc "
              "includes its dense VI source), test FLOPs = one forward pass per image")
STD_NOTE = "mean ± std over seeds (std with ddof = 1; '—' when n = 1)"
OOD_NOTE = ("OOD scores, higher score = more in-distribution: max_prob = maximum softmax probability of the "
            "posterior predictive, neg_entropy = negative predictive entropy, neg_mutual_info = negative mutual "
            "information between prediction and weights (epistemic); AUROC; AUPR = average precision with the "
            "in-distribution test set as the positive class; FPR95 = fraction of OOD inputs scored at or above "
            "the threshold where 95% of in-distribution inputs pass (FPR at 95% TPR, lower is better)")

CLAIM_DENSITIES = (0.1, 0.05)  # reference section 7, C1
HOLDS, FAILS, NOT_ENOUGH = "holds", "fails", "not enough runs"
WITHIN, OUTSIDE, NOT_FILLED, NO_RUNS = "within tolerance", "outside tolerance", "paper value not filled", "no runs"
STAGES = ("start", "middle", "end")

RUN_PATH = re.compile(r"(?P<dataset>[^/]+)/(?P<arch>[^/]+)/(?P<method>[^/]+)/(?P<variant>[^/]+)/"
                      r"d(?P<density>[^/]+)/seed(?P<seed>\d+)/?$")


class MissingRunsError(RuntimeError):
    """Run directories without a finished ``metrics.json``; the message names them."""


class MissingEvalError(RuntimeError):
    """Finished runs without ``ood_shift.json`` under ``--require-eval``; the message names them."""


class EvalFileError(RuntimeError):
    """An ``ood_shift.json`` that cannot be read or belongs to another run; the message names it."""


@dataclass
class Table:
    name: str
    data: pd.DataFrame                               # numbers -> <name>.csv
    display: pd.DataFrame                            # formatted cells -> <name>.md, <name>.tex
    caption: str
    blocks: list[str] = field(default_factory=list)  # Markdown: one sub-table per value of these columns
    prune_blocks: bool = False                       # Markdown: drop a block's columns that are all "—"


# ======================================================================================================
# loading
# ======================================================================================================

def default_run_dirs(config: dict) -> list[Path]:
    root = grid.runs_root(config)
    return [root / path for path in sorted(grid.run_grid(config))]


def method_label(method: str, ft_epochs) -> str:
    return f"posthoc (ft {int(ft_epochs)})" if method == "posthoc" else method


def infer_variant(method: str, cfg: dict, defaults: dict) -> str:
    """The grid's variant of a run dir outside the standard layout, from its run config."""
    if method == "posthoc":
        return f"ft{cfg.get('epochs')}"
    if cfg.get("criterion", defaults["criterion"]) != defaults["criterion"]:
        return f"crit-{cfg['criterion']}"
    sigma, kl = cfg.get("sigma_init", defaults["sigma_init"]), cfg.get("kl_scale", defaults["kl_scale"])
    if sigma != defaults["sigma_init"] or kl != defaults["kl_scale"]:
        return f"sigma{sigma:g}-kl{kl:g}"
    return grid.DEFAULT


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def run_row(run_dir: Path, m: dict, defaults: dict) -> dict:
    """One row of the runs table from a run's metrics.json."""
    cfg = m.get("config", {})
    method = m["method"]
    ft = cfg.get("epochs", m.get("epochs")) if method == "posthoc" else None
    parsed = RUN_PATH.search(run_dir.as_posix())
    mean_weight = m.get("mean_weight", {})
    return {
        "run_dir": str(run_dir), "dataset": m["dataset"], "arch": m["arch"], "method": method,
        "label": method_label(method, ft),
        "variant": parsed["variant"] if parsed else infer_variant(method, cfg, defaults),
        "density": float(parsed["density"]) if parsed else _num(m.get("target_density", 1.0)),
        "seed": int(m["seed"]),
        "criterion": cfg.get("criterion", defaults["criterion"]),
        "sigma_init": _num(cfg.get("sigma_init", defaults["sigma_init"])),
        "kl_scale": _num(cfg.get("kl_scale", defaults["kl_scale"])),
        "ft_epochs": _num(ft), "epochs": m.get("epochs"), "actual_density": _num(m.get("density")),
        "acc_pct": 100 * _num(m.get("acc")), **{k: _num(m.get(k)) for k in METRICS[1:]},
        "mw_acc_pct": 100 * _num(mean_weight.get("acc")), **{f"mw_{k}": _num(mean_weight.get(k)) for k in METRICS[1:]},
        "train_flops": _num(m.get("train_flops")), "train_flops_this_run": _num(m.get("train_flops_this_run")),
        "test_flops": _num(m.get("test_flops")), "dense_test_flops": _num(m.get("dense_test_flops")),
        "num_samples": m.get("eval", {}).get("num_samples"), "width": m.get("width"),
    }


RUN_COLUMNS = list(run_row(Path("x"), {"method": "ssvi", "dataset": "", "arch": "", "seed": 0},
                           {"criterion": "", "sigma_init": 0.0, "kl_scale": 0.0}))


def load_runs(config: dict, run_dirs=None, allow_missing: bool = False) -> pd.DataFrame:
    """One row per finished run. Run dirs without metrics.json raise MissingRunsError (or are skipped)."""
    defaults = grid.recipe_defaults(config)
    dirs = list(dict.fromkeys(Path(d) for d in (default_run_dirs(config) if run_dirs is None else run_dirs)))
    missing = [d for d in dirs if not (d / METRICS_FILE).is_file()]
    if missing and not allow_missing:
        raise MissingRunsError(f"{len(missing)} run(s) have no {METRICS_FILE} (unfinished or not run; pass "
                               f"--allow-missing to aggregate the others):\n  " + "\n  ".join(map(str, missing)))
    for d in missing:
        log.warning("skipping unfinished run %s (no %s)", d, METRICS_FILE)
    rows = [run_row(d, json.loads((d / METRICS_FILE).read_text()), defaults) for d in dirs if d not in missing]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


@dataclass
class Evaluations:
    """The runs' ood_shift.json files in long format, keyed by run_dir (the runs table's column)."""
    ood: pd.DataFrame                                          # run_dir, ood_set, score, auroc, aupr, fpr95
    shift: pd.DataFrame                                        # run_dir, corruption, severity, acc_pct, nll, ...
    missing_sets: dict[str, list[str]] = field(default_factory=dict)  # OOD set -> runs where it was skipped
    shift_sources: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls) -> "Evaluations":
        return cls(pd.DataFrame(columns=EVAL_OOD_COLUMNS), pd.DataFrame(columns=EVAL_SHIFT_COLUMNS))


EVAL_OOD_COLUMNS = ["run_dir", "ood_set", "score", *OOD_METRICS]
EVAL_SHIFT_COLUMNS = ["run_dir", "corruption", "severity", *METRICS]


def load_evaluations(runs: pd.DataFrame, require: bool = False) -> Evaluations:
    """Read ``ood_shift.json`` of every run in ``runs`` that has one. ``require``: a run without it raises
    MissingEvalError naming every such run. A file of another run (method/dataset/arch/seed differ) or
    unreadable JSON raises EvalFileError. OOD sets recorded as {"missing": ...} give no values."""
    run_dirs = list(runs["run_dir"]) if not runs.empty else []
    missing = [d for d in run_dirs if not (Path(d) / EVAL_FILE).is_file()]
    if missing and require:
        raise MissingEvalError(f"{len(missing)} finished run(s) have no {EVAL_FILE} (run `python -m ssvi evaluate "
                               f"--run RUN_DIR`, or drop --require-eval):\n  " + "\n  ".join(missing))
    if missing:
        log.info("%d run(s) without %s: no OOD / shift values for them", len(missing), EVAL_FILE)
    evals, ood, shift = Evaluations.empty(), [], []
    for _, run in runs.iterrows():
        path = Path(run["run_dir"]) / EVAL_FILE
        if run["run_dir"] in missing:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise EvalFileError(f"{path}: cannot read ({err})") from err
        other = {k: (data.get(k), run[k]) for k in ("method", "dataset", "arch", "seed")
                 if k in data and data[k] != run[k]}
        if other:
            diffs = ", ".join(f"{k}: {a!r} there, {b!r} in {METRICS_FILE}" for k, (a, b) in other.items())
            raise EvalFileError(f"{path} belongs to another run ({diffs}); re-run ssvi evaluate")
        for ood_set, scores in (data.get("ood") or {}).items():
            if "missing" in scores:
                evals.missing_sets.setdefault(ood_set, []).append(run["run_dir"])
                continue
            ood += [{"run_dir": run["run_dir"], "ood_set": ood_set, "score": score,
                     **{m: _num(values.get(m)) for m in OOD_METRICS}} for score, values in scores.items()]
        shift += [{"run_dir": run["run_dir"], "corruption": r["corruption"], "severity": int(r["severity"]),
                   "acc_pct": 100 * _num(r.get("acc")), **{m: _num(r.get(m)) for m in METRICS[1:]}}
                  for r in data.get("shift") or []]
        if data.get("shift") and data.get("shift_source") and data["shift_source"] not in evals.shift_sources:
            evals.shift_sources.append(data["shift_source"])
    for ood_set, dirs in evals.missing_sets.items():
        log.warning("OOD set %s was skipped by ssvi evaluate in %d run(s), e.g. %s", ood_set, len(dirs), dirs[0])
    evals.ood = pd.DataFrame(ood, columns=EVAL_OOD_COLUMNS)
    evals.shift = pd.DataFrame(shift, columns=EVAL_SHIFT_COLUMNS)
    return evals


def read_subspace(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / SUBSPACE_FILE
    if not path.is_file():
        log.warning("%s has no %s; no subspace records", run_dir, SUBSPACE_FILE)
        return []
    return json.loads(path.read_text())


# ======================================================================================================
# statistics and formatting helpers
# ======================================================================================================

def seed_stats(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of ``keys``: n (runs) and <metric>_mean, <metric>_std (ddof = 1; NaN when n = 1)."""
    columns = [*keys, "n", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")]]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    groups = runs.groupby(keys, sort=False, dropna=False)
    out = groups.size().rename("n").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = groups[m].mean()
        out[f"{m}_std"] = groups[m].std(ddof=1)
    return out.reset_index()[columns]


def pm(mean, std, fmt: str) -> str:
    """'mean ± std'; '—' for a missing std (n = 1) or mean."""
    if pd.isna(mean):
        return "—"
    return f"{mean:{fmt}} ± {'—' if pd.isna(std) else format(std, fmt)}"


def pm_columns(stats: pd.DataFrame, metrics: list[str]) -> dict[str, list[str]]:
    return {LABELS[m]: [pm(a, b, FORMATS[m]) for a, b in zip(stats[f"{m}_mean"], stats[f"{m}_std"])]
            for m in metrics}


def seeds_note(ns, unit: str = "seed") -> str:
    ns = [int(n) for n in ns if not pd.isna(n)]
    if not ns:
        return "no runs"
    low, high = min(ns), max(ns)
    return f"n = {low} {unit}{'s' if low > 1 else ''} per cell" if low == high else \
        f"n = {low}–{high} {unit}s per cell (column n)"


def caption(text: str, ns, spread: str = STD_NOTE, unit: str = "seed") -> str:
    """Table caption: what it shows, how cells are summarised, n, the ECE variants and the FLOPs unit."""
    return f"{text}. {spread}; {seeds_note(ns, unit)}. {ECE_NOTE}. {FLOPS_NOTE}."


def at_least_as_good(a_mean, a_std, b_mean, b_std, higher_is_better: bool) -> bool:
    """a matches or beats b: within the larger of the two seed stds (0 where n = 1)."""
    slack = max(0.0 if pd.isna(a_std) else a_std, 0.0 if pd.isna(b_std) else b_std)
    return bool(a_mean >= b_mean - slack) if higher_is_better else bool(a_mean <= b_mean + slack)


def close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _order(config: dict, runs_methods) -> list[str]:
    methods = ["dense_vi", *config.get("methods", {})]
    methods += sorted(set(runs_methods) - set(methods))
    return list(dict.fromkeys(methods))


def sort_cells(stats: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Config order of dataset, arch, method (posthoc by fine-tune epochs), density descending."""
    if stats.empty:
        return stats
    datasets, archs = list(config.get("datasets", [])), list(config.get("archs", []))
    methods = _order(config, [label.split(" ")[0] for label in stats["method"]])

    def key(row):
        base, _, rest = row["method"].partition(" (ft ")
        ft = int(rest.rstrip(")")) if rest else -1
        rank = lambda seq, x: (seq.index(x) if x in seq else len(seq), x)  # noqa: E731
        return (*rank(datasets, row["dataset"]), *rank(archs, row["arch"]), *rank(methods, base), ft, -row["density"])

    return stats.iloc[sorted(range(len(stats)), key=lambda i: key(stats.iloc[i]))].reset_index(drop=True)


# ======================================================================================================
# study selections
# ======================================================================================================

def main_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The default recipe of every method (and the post-hoc fine-tune variants)."""
    posthoc_ft = (runs["method"] == "posthoc") & runs["variant"].str.startswith("ft")
    return runs[(runs["variant"] == grid.DEFAULT) | posthoc_ft]


def main_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """main_runs with the method column replaced by its label (post-hoc rows: 'posthoc (ft E)')."""
    return main_runs(runs).assign(method=lambda f: f["label"]) if not runs.empty else runs


def ablation_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    ab = config.get("criteria_ablation")
    if not ab or runs.empty:
        return runs.iloc[0:0]
    keep = ((runs["dataset"] == ab["dataset"]) & (runs["arch"] == ab["arch"]) & (runs["method"] == "ssvi")
            & runs["density"].map(lambda d: close(d, ab["density"]))
            & ((runs["variant"] == grid.DEFAULT) | runs["variant"].str.startswith("crit-")))
    return runs[keep]


def robustness_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    rb = config.get("robustness")
    if not rb or runs.empty:
        return runs.iloc[0:0]
    density_ok = runs.apply(lambda r: close(r["density"], 1.0 if r["method"] == "dense_vi" else rb["density"]), axis=1)
    in_grid = (runs["sigma_init"].map(lambda s: any(close(s, x) for x in rb["sigma_init"]))
               & runs["kl_scale"].map(lambda k: any(close(k, x) for x in rb["kl_scale"])))
    keep = ((runs["dataset"] == rb["dataset"]) & (runs["arch"] == rb["arch"]) & runs["method"].isin(rb["methods"])
            & density_ok & in_grid
            & ((runs["variant"] == grid.DEFAULT) | runs["variant"].str.match(r"sigma.*-kl")))
    return runs[keep]


# ======================================================================================================
# tables
# ======================================================================================================

CELL_KEYS = ["dataset", "arch", "method", "density"]


def main_stats(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Numbers of the main table: one row per dataset x arch x method label x density."""
    stats = sort_cells(seed_stats(main_cells(runs), CELL_KEYS, METRICS + FLOPS), config)
    dense = stats[stats["method"] == "dense_vi"].set_index(["dataset", "arch"])["train_flops_mean"]
    stats["train_flops_reduction_vs_dense_vi"] = [dense.get((d, a), float("nan")) / flops for d, a, flops
                                                  in zip(stats["dataset"], stats["arch"], stats["train_flops_mean"])]
    return stats


def load_expected(path) -> tuple[dict, dict]:
    """(values, tolerances) of the expected-values file; ({}, defaults) when there is none."""
    if path is None or not Path(path).is_file():
        if path is not None:
            log.warning("expected-values file %s not found; no comparison with the paper", path)
        return {}, dict(DEFAULT_TOLERANCES)
    data = yaml.safe_load(Path(path).read_text()) or {}
    tolerances = {**DEFAULT_TOLERANCES, **(data.pop("tolerances", None) or {})}
    for dataset, archs in data.items():
        for arch, methods in (archs or {}).items():
            for method, densities in (methods or {}).items():
                for density, values in (densities or {}).items():
                    unknown = set(values or {}) - set(EXPECTED_METRICS)
                    if unknown:
                        raise ValueError(f"{path}: {dataset}/{arch}/{method}/{density}: unknown metric(s) "
                                         f"{sorted(unknown)}; allowed: {sorted(EXPECTED_METRICS)}")
    return data, tolerances


def paper_comparison(stats: pd.DataFrame, expected: dict, tolerances: dict) -> pd.DataFrame:
    """One row per entry of the expected file: ours (mean, std, n), paper, ours - paper, verdict.

    Verdict: DeepDiff(paper, ours, math_epsilon=tolerance) is empty, i.e. |ours - paper| <= tolerance."""
    rows = []
    for dataset, archs in expected.items():
        for arch, methods in (archs or {}).items():
            for method, densities in (methods or {}).items():
                for density, values in (densities or {}).items():
                    mine = stats[(stats["dataset"] == dataset) & (stats["arch"] == arch)
                                 & (stats["method"] == method) & stats["density"].map(lambda d: close(d, density))]
                    for key, paper in (values or {}).items():
                        col = EXPECTED_METRICS[key]
                        ours = float(mine[f"{col}_mean"].iloc[0]) if len(mine) else float("nan")
                        tol = float(tolerances[key])
                        if paper is None:
                            status, diff = NOT_FILLED, float("nan")
                        elif math.isnan(ours):
                            status, diff = NO_RUNS, float("nan")
                        else:
                            diff = ours - float(paper)
                            status = OUTSIDE if DeepDiff(float(paper), ours, math_epsilon=tol) else WITHIN
                        rows.append({"dataset": dataset, "arch": arch, "method": method, "density": float(density),
                                     "metric": col, "ours_mean": ours,
                                     "ours_std": float(mine[f"{col}_std"].iloc[0]) if len(mine) else float("nan"),
                                     "n": int(mine["n"].iloc[0]) if len(mine) else 0,
                                     "paper": _num(paper), "ours_minus_paper": diff, "tolerance": tol,
                                     "verdict": status})
    columns = ["dataset", "arch", "method", "density", "metric", "ours_mean", "ours_std", "n", "paper",
               "ours_minus_paper", "tolerance", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _paper_cell(row, metric: str) -> str:
    fmt = FORMATS[metric]
    if row["verdict"] in (NOT_FILLED, NO_RUNS):
        return row["verdict"]
    return (f"{row['paper']:{fmt}} (ours − paper {row['ours_minus_paper']:+{fmt}}; "
            f"{row['verdict']} ±{row['tolerance']:g})")


def main_table(stats: pd.DataFrame, comparison: pd.DataFrame) -> Table:
    data, display = stats.copy(), stats[["dataset", "arch", "method", "density"]].copy()
    display["density"] = display["density"].map(lambda d: f"{d:g}")
    for label, cells in pm_columns(stats, METRICS + FLOPS).items():
        display[label] = cells
    display["train FLOPs: dense VI ÷ this"] = [
        "—" if pd.isna(r) else f"{r:.1f}×" for r in stats["train_flops_reduction_vs_dense_vi"]]
    display["n (seeds)"] = stats["n"]
    for metric in [m for m in METRICS if m in set(comparison["metric"])]:
        rows = comparison[comparison["metric"] == metric]
        paper_cols = {"paper": f"paper_{metric}", "ours_minus_paper": f"ours_minus_paper_{metric}",
                      "verdict": f"paper_verdict_{metric}"}
        merged = data[["dataset", "arch", "method", "density"]].merge(
            rows, on=["dataset", "arch", "method", "density"], how="left")
        if merged["verdict"].isna().all():
            continue  # no expected entry for any row of this table
        for src, dst in paper_cols.items():
            data[dst] = merged[src].to_numpy()
        display[f"paper {LABELS[metric]}"] = [
            "—" if pd.isna(r["verdict"]) else _paper_cell(r, metric) for _, r in merged.iterrows()]
    text = ("Main results (the paper's Table 1 layout), default recipe, final-epoch model, posterior predictive; "
            "post-hoc rows labelled with their fine-tune epochs; 'dense VI ÷ this' = training-FLOPs reduction vs "
            "dense VI of the same dataset and arch; 'paper' columns: values of the expected-values file "
            "(ours − paper, verdict within/outside tolerance)")
    return Table("main", data, display, caption(text, stats["n"]), blocks=["dataset", "arch"])


def comparison_table(comparison: pd.DataFrame) -> Table:
    display = comparison[["dataset", "arch", "method", "density"]].copy()
    display["density"] = display["density"].map(lambda d: f"{d:g}")
    display["metric"] = comparison["metric"].map(LABELS)
    display["ours"] = [pm(m, s, FORMATS[k]) for m, s, k in zip(comparison["ours_mean"], comparison["ours_std"],
                                                                 comparison["metric"])]
    display["paper"] = ["—" if pd.isna(p) else f"{p:{FORMATS[k]}}"
                        for p, k in zip(comparison["paper"], comparison["metric"])]
    display["ours − paper"] = ["—" if pd.isna(d) else f"{d:+{FORMATS[k]}}"
                               for d, k in zip(comparison["ours_minus_paper"], comparison["metric"])]
    display["tolerance"] = comparison["tolerance"].map(lambda t: f"±{t:g}")
    display["verdict"] = comparison["verdict"]
    display["n"] = comparison["n"]
    text = ("Comparison with the paper's reported values (results/expected/paper.yaml; null = paper value not "
            "filled); verdict: |ours − paper| ≤ tolerance")
    return Table("paper_comparison", comparison, display, caption(text, comparison["n"][comparison["n"] > 0]))


def density_sweep_table(stats: pd.DataFrame) -> Table:
    rows = [{"dataset": r["dataset"], "arch": r["arch"], "method": r["method"], "density": r["density"],
             "metric": m, "mean": r[f"{m}_mean"], "std": r[f"{m}_std"], "n": r["n"]}
            for _, r in stats.iterrows() for m in METRICS + FLOPS]
    data = pd.DataFrame(rows, columns=["dataset", "arch", "method", "density", "metric", "mean", "std", "n"])
    display = data[["dataset", "arch", "method"]].copy()
    display["density"] = data["density"].map(lambda d: f"{d:g}")
    display["metric"] = data["metric"].map(LABELS)
    display["value"] = [pm(a, b, FORMATS[m]) for a, b, m in zip(data["mean"], data["std"], data["metric"])]
    display["n"] = data["n"]
    text = "Density sweep (long format): every metric of every method and density, default recipe"
    return Table("density_sweep", data, display, caption(text, data["n"]))


def criteria_table(runs: pd.DataFrame, config: dict) -> Table:
    ab = config.get("criteria_ablation") or {}
    default = grid.recipe_defaults(config)["criterion"]
    stats = seed_stats(ablation_runs(runs, config), ["criterion"], METRICS)
    order = list(ab.get("criteria", []))
    stats = stats.sort_values("criterion", key=lambda s: s.map(lambda c: order.index(c) if c in order else len(order)),
                              kind="stable").reset_index(drop=True)
    stats.insert(1, "default", stats["criterion"] == default)
    display = pd.DataFrame({"criterion": [c + (" (default)" if c == default else "") for c in stats["criterion"]]})
    for label, cells in pm_columns(stats, METRICS).items():
        display[label] = cells
    display["n (seeds)"] = stats["n"].to_numpy()
    where = f"{ab.get('dataset')}/{ab.get('arch')}, d = {ab.get('density')}" if ab else "no criteria_ablation in config"
    text = f"Criteria ablation: SSVI per removal criterion ({where})"
    return Table("criteria", stats, display, caption(text, stats["n"]))


def stage_records(records: list[dict]) -> dict[str, dict] | None:
    """The first, middle (index floor(U / 2) of U updates) and last subspace update of a run."""
    updates = [r for r in records if "iou" in r]
    if not updates:
        return None
    return {"start": updates[0], "middle": updates[len(updates) // 2], "end": updates[-1]}


def overlap_tables(runs: pd.DataFrame, config: dict) -> list[Table]:
    """IoU / Spearman matrices between criteria at start/middle/end, averaged over the ablation runs."""
    mats: dict[tuple[str, str], list[pd.DataFrame]] = {(k, s): [] for k in ("iou", "spearman") for s in STAGES}
    names: list[str] = []
    for run_dir in ablation_runs(runs, config)["run_dir"]:
        stages = stage_records(read_subspace(run_dir))
        if stages is None:
            continue
        for stage, record in stages.items():
            names = names or list(record["criteria"])
            for kind in ("iou", "spearman"):
                values = np.array(record[kind], dtype=float)
                mats[kind, stage].append(pd.DataFrame(values, index=record["criteria"], columns=record["criteria"])
                                         .reindex(index=names, columns=names))
    n_runs = len(mats["iou", "start"])
    tables = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (no removals) stay NaN
        for (kind, stage), frames in mats.items():
            if frames:
                mean = pd.DataFrame(np.nanmean(np.stack([f.to_numpy() for f in frames]), axis=0),
                                    index=names, columns=names)
                data = mean.rename_axis("criterion").reset_index()
            else:
                data = pd.DataFrame(columns=["criterion"])
            display = data.copy()
            for c in display.columns[1:]:
                display[c] = display[c].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
            what = ("IoU of the weight sets removed" if kind == "iou" else "Spearman rank correlation of the scores")
            text = (f"{what} by each pair of removal criteria at the {stage} of the update phase (first / middle = "
                    f"index floor(U/2) / last of U updates), averaged over {n_runs} SSVI runs of the criteria "
                    f"ablation (all criteria and seeds)")
            tables.append(Table(f"{kind}_{stage}", data, display,
                                caption(text, [n_runs] if n_runs else [], "element-wise mean over runs", "run")))
        rows = []
        for c in names if "mean" in names else []:
            row = {"criterion": c}
            for stage in STAGES:
                vals = np.array([f.loc[c, "mean"] for f in mats["iou", stage]], dtype=float)
                vals = vals[~np.isnan(vals)]
                row[f"iou_{stage}_mean"] = vals.mean() if len(vals) else float("nan")
                row[f"iou_{stage}_std"] = vals.std(ddof=1) if len(vals) > 1 else float("nan")
            row["n"] = n_runs
            rows.append(row)
    cols = ["criterion", *[f"iou_{s}_{x}" for s in STAGES for x in ("mean", "std")], "n"]
    data = pd.DataFrame(rows, columns=cols)
    display = pd.DataFrame({"criterion": data["criterion"]})
    for stage in STAGES:
        display[f"IoU with |μ| ({stage})"] = [pm(a, b, ".3f")
                                              for a, b in zip(data[f"iou_{stage}_mean"], data[f"iou_{stage}_std"])]
    display["n (runs)"] = data["n"]
    text = ("Per criterion: IoU of its removed set with the set |μ| ('mean') removes, at the first, middle and last "
            "update (1 − IoU: how much its removals differ), mean ± std over the ablation runs")
    tables.append(Table("criteria_vs_mean", data, display,
                        caption(text, data["n"], "mean ± std over runs (std with ddof = 1)", "run")))
    return tables


def robustness_tables(runs: pd.DataFrame, config: dict) -> list[Table]:
    rb = config.get("robustness") or {}
    stats = seed_stats(robustness_runs(runs, config), ["method", "sigma_init", "kl_scale"], METRICS)
    methods = list(rb.get("methods", []))
    if not stats.empty:
        stats = stats.assign(_m=stats["method"].map(lambda m: methods.index(m) if m in methods else len(methods)))
        stats = stats.sort_values(["_m", "sigma_init", "kl_scale"]).drop(columns="_m").reset_index(drop=True)
    display = stats[["method"]].copy()
    display["σ-init"] = stats["sigma_init"].map(lambda s: f"{s:g}")
    display["KL scale"] = stats["kl_scale"].map(lambda s: f"{s:g}")
    for label, cells in pm_columns(stats, METRICS).items():
        display[label] = cells
    display["n (seeds)"] = stats["n"]
    where = (f"{rb.get('dataset')}/{rb.get('arch')}, d = {rb.get('density')} (dense VI: 1)" if rb
             else "no robustness in config")
    text = f"Hyperparameter robustness: method × σ-init × KL scale ({where})"
    grid_table = Table("robustness", stats, display, caption(text, stats["n"]))

    spread = robustness_spread(stats)
    sdisplay = spread[["method", "cells"]].copy()
    headers = {"acc_min": "worst acc (%)", "acc_max": "best acc (%)", "acc_range": "max − min (points)",
               "acc_std": "std over cells (points)"}
    for column, header in headers.items():
        sdisplay[header] = spread[column].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
    sdisplay["worst cell"] = spread["worst_cell"]
    text = ("Robustness spread per method: min, max, max − min and std (ddof = 1) of the per-cell mean accuracy "
            "over the σ-init × KL-scale grid")
    return [grid_table, Table("robustness_spread", spread, sdisplay,
                              caption(text, stats["n"], "cells are seed means (std over seeds: table robustness)"))]


def robustness_spread(stats: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, cells in stats.groupby("method", sort=False):
        acc = cells["acc_pct_mean"]
        worst = cells.loc[acc.idxmin()] if acc.notna().any() else None
        where = "—" if worst is None else f"σ-init {worst['sigma_init']:g}, KL {worst['kl_scale']:g}"
        rows.append({"method": method, "cells": len(cells), "acc_min": acc.min(), "acc_max": acc.max(),
                     "acc_range": acc.max() - acc.min(), "acc_std": acc.std(ddof=1), "worst_cell": where})
    return pd.DataFrame(rows, columns=["method", "cells", "acc_min", "acc_max", "acc_range", "acc_std", "worst_cell"])


def _ranked(frame: pd.DataFrame, column: str, order: list) -> pd.DataFrame:
    """Stable sort by the position of ``column``'s values in ``order`` (unknown values last, as found)."""
    order = list(dict.fromkeys([*order, *frame[column]]))
    return frame.sort_values(column, key=lambda col: col.map(order.index), kind="stable")


def _eval_cells(runs: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """The main-table runs (method = label) joined with their per-run OOD or shift rows."""
    cells = main_cells(runs)
    if cells.empty or values.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "run_dir", *values.columns[1:]])
    return cells[[*CELL_KEYS, "run_dir"]].merge(values, on="run_dir")


def _per_run_mean(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of METRICS per run and ``by`` (NaN if any averaged value is NaN, like ssvi/shift.py)."""
    return frame.groupby([*CELL_KEYS, "run_dir", *by], sort=False)[METRICS].mean(skipna=False).reset_index()


def _n_text(ns) -> str:
    ns = [int(n) for n in ns]
    return "0" if not ns else str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}"


def ood_stats(runs: pd.DataFrame, evals: Evaluations, config: dict) -> pd.DataFrame:
    """One row per dataset x arch x method label x density x OOD set x score: n, auroc/aupr/fpr95 mean, std."""
    cells = _eval_cells(runs, evals.ood)
    if not cells.empty:
        cells = _ranked(_ranked(cells, "score", OOD_SCORES), "ood_set", [])
    return sort_cells(seed_stats(cells, [*CELL_KEYS, "ood_set", "score"], OOD_METRICS), config)


def ood_table(stats: pd.DataFrame, evals: Evaluations, runs: pd.DataFrame) -> Table:
    pairs = list(dict.fromkeys(zip(stats["ood_set"], stats["score"])))
    lookup = {tuple(r[[*CELL_KEYS, "ood_set", "score"]]): r for _, r in stats.iterrows()}
    columns = [*CELL_KEYS, *[f"{s} / {sc} {LABELS[m]}" for s, sc in pairs for m in OOD_METRICS], "n (seeds)"]
    rows = []
    for cell in dict.fromkeys(zip(*(stats[k] for k in CELL_KEYS))):
        row, ns = dict(zip(CELL_KEYS, cell)), []
        row["density"] = f"{row['density']:g}"
        for ood_set, score in pairs:
            r = lookup.get((*cell, ood_set, score))
            ns += [] if r is None else [r["n"]]
            for m in OOD_METRICS:
                row[f"{ood_set} / {score} {LABELS[m]}"] = "—" if r is None else pm(r[f"{m}_mean"], r[f"{m}_std"],
                                                                                  FORMATS[m])
        row["n (seeds)"] = _n_text(ns)
        rows.append(row)
    main_dirs = set(main_cells(runs)["run_dir"]) if not runs.empty else set()
    skipped = {s: sum(d in main_dirs for d in dirs) for s, dirs in evals.missing_sets.items()}
    skipped_note = "; ".join(f"{s} skipped in {n} run(s) (data missing when ssvi evaluate ran)"
                             for s, n in skipped.items() if n)
    text = ("OOD detection (ood_shift.json of ssvi evaluate), default recipe, final-epoch model, posterior "
            "predictive, in-distribution test set vs each OOD set; post-hoc rows labelled with their fine-tune "
            f"epochs; values per run, then over seeds. {OOD_NOTE}" + (f". {skipped_note}" if skipped_note else ""))
    return Table("ood", stats, pd.DataFrame(rows, columns=columns), caption(text, stats["n"]),
                 blocks=["dataset", "arch"], prune_blocks=True)


def _shift_text(evals: Evaluations) -> str:
    sources = ", ".join(evals.shift_sources) or "none recorded"
    corruptions = ", ".join(dict.fromkeys(evals.shift["corruption"])) or "none"
    return (f"Distribution shift (ood_shift.json of ssvi evaluate), default recipe, final-epoch model, posterior "
            f"predictive on corrupted test sets (source: {sources}; corruptions: {corruptions}); post-hoc rows "
            f"labelled with their fine-tune epochs")


def shift_tables(runs: pd.DataFrame, evals: Evaluations, config: dict) -> list[Table]:
    """shift: per severity (mean over corruptions) + 'all'; shift_corruptions: per corruption (mean over severities)."""
    cells = _eval_cells(runs, evals.shift)
    keys = [*CELL_KEYS, "severity"]
    if cells.empty:
        stats = seed_stats(cells, keys, METRICS)
        per_corruption = seed_stats(cells, [*CELL_KEYS, "corruption"], METRICS)
    else:
        by_severity = seed_stats(_per_run_mean(cells, ["severity"]).sort_values("severity", kind="stable"),
                                 keys, METRICS)
        by_severity["severity"] = by_severity["severity"].map(lambda v: str(int(v)))
        overall = seed_stats(_per_run_mean(cells, []).assign(severity=SEVERITY_ALL), keys, METRICS)
        stats = sort_cells(pd.concat([by_severity, overall], ignore_index=True), config)
        per_corruption = sort_cells(seed_stats(_ranked(_per_run_mean(cells, ["corruption"]), "corruption", []),
                                               [*CELL_KEYS, "corruption"], METRICS), config)
    tables = []
    for name, frame, what in (
            ("shift", stats, f"per severity 1–5 the metrics averaged over corruptions per run; severity "
                             f"'{SEVERITY_ALL}' = mean over every corruption and severity"),
            ("shift_corruptions", per_corruption, "per corruption the metrics averaged over severities 1–5 per run")):
        display = frame.drop(columns=[c for c in frame.columns if c.endswith(("_mean", "_std")) or c == "n"])
        display["density"] = display["density"].map(lambda d: f"{d:g}")
        for label, column in pm_columns(frame, METRICS).items():
            display[label] = column
        display["n (seeds)"] = frame["n"]
        tables.append(Table(name, frame, display, caption(f"{_shift_text(evals)}: {what}", frame["n"]),
                            blocks=["dataset", "arch"]))
    return tables


# ======================================================================================================
# claims (reference section 7)
# ======================================================================================================

def _verdict(checks: list[bool]) -> str:
    return NOT_ENOUGH if not checks else (HOLDS if all(checks) else FAILS)


def _cell(stats: pd.DataFrame, dataset: str, arch: str, method: str, density: float, **extra):
    """The row of one cell (``extra``: further columns that must be equal, e.g. ood_set, score), or None."""
    keep = ((stats["dataset"] == dataset) & (stats["arch"] == arch) & (stats["method"] == method)
            & stats["density"].map(lambda d: close(d, density)))
    for column, value in extra.items():
        keep &= stats[column] == value
    rows = stats[keep]
    return None if rows.empty else rows.iloc[0]


def _blocks(stats: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(stats["dataset"], stats["arch"])))


def claim_c1(stats: pd.DataFrame, tol: float) -> dict:
    numbers, checks = [], []
    for dataset, arch in _blocks(stats):
        dense = _cell(stats, dataset, arch, "dense_vi", 1.0)
        for d in CLAIM_DENSITIES:
            ssvi = _cell(stats, dataset, arch, "ssvi", d)
            if dense is None or ssvi is None:
                numbers.append({"dataset": dataset, "arch": arch, "density": d, "status": "missing runs"})
                continue
            drop = dense["acc_pct_mean"] - ssvi["acc_pct_mean"]
            checks.append(bool(drop <= tol))
            numbers.append({"dataset": dataset, "arch": arch, "density": d, "dense_acc": dense["acc_pct_mean"],
                            "ssvi_acc": ssvi["acc_pct_mean"], "drop_points": drop, "tolerance": tol,
                            "status": "pass" if checks[-1] else "fail"})
    evaluated = [n for n in numbers if "drop_points" in n]
    worst = max(evaluated, key=lambda n: n["drop_points"], default=None)
    summary = "no dataset/arch with both dense VI and SSVI at d ∈ {0.1, 0.05}" if worst is None else (
        f"largest drop {worst['drop_points']:.2f} points ({worst['dataset']}/{worst['arch']}, "
        f"d = {worst['density']:g}) vs tolerance {tol:g}; {sum(checks)}/{len(checks)} groups pass")
    definition = (f"For each dataset × arch and each d ∈ {{0.1, 0.05}}: drop = mean acc(dense VI) − mean acc(SSVI, "
                  f"d) in points (seed means, default recipe); a group passes if drop ≤ claims.acc_drop_points = "
                  f"{tol:g}. holds: every group with both runs passes; fails: some group fails; not enough runs: no "
                  f"group has both (groups missing runs are listed and not counted).")
    return {"claim": "C1", "statement": "At d ∈ {0.1, 0.05} SSVI accuracy is within 3 points of dense VI",
            "verdict": _verdict(checks), "summary": summary, "definition": definition, "numbers": numbers}


def claim_c2(stats: pd.DataFrame, target: float) -> dict:
    numbers, checks = [], []
    for dataset, arch in _blocks(stats):
        dense = _cell(stats, dataset, arch, "dense_vi", 1.0)
        ssvi_rows = stats[(stats["dataset"] == dataset) & (stats["arch"] == arch) & (stats["method"] == "ssvi")]
        if dense is None or ssvi_rows.empty:
            continue
        ratios = []
        for _, ssvi in ssvi_rows.iterrows():
            d = ssvi["density"]
            reduction = dense["train_flops_mean"] / ssvi["train_flops_mean"]
            claimed = min(target, 1.0 / d)
            ratios.append(reduction / claimed)
            numbers.append({"dataset": dataset, "arch": arch, "density": d,
                            "dense_train_flops": dense["train_flops_mean"],
                            "ssvi_train_flops": ssvi["train_flops_mean"], "reduction": reduction, "one_over_d": 1.0 / d, "claimed": claimed,
                            "reduction_over_claimed": reduction / claimed})
        checks.append(bool(max(ratios) >= 0.9))
    best = max(numbers, key=lambda n: n["reduction"], default=None)
    summary = "no dataset/arch with both dense VI and SSVI runs" if best is None else (
        f"max reduction {best['reduction']:.1f}× ({best['dataset']}/{best['arch']}, d = {best['density']:g}; "
        f"1/d = {best['one_over_d']:.0f}, target {target:g}); {sum(checks)}/{len(checks)} dataset/arch blocks pass")
    definition = (f"For each dataset × arch and SSVI density d: reduction(d) = mean train FLOPs(dense VI) / mean "
                  f"train FLOPs(SSVI, d); claimed(d) = min(claims.flops_reduction_target = {target:g}, 1/d). A block "
                  f"passes if max_d reduction(d) / claimed(d) ≥ 0.9 (some density reaches 90% of 'up to {target:g}×', or "
                  f"≈ 1/d when 1/d < target). holds: every block with both methods passes; fails: some block fails.")
    return {"claim": "C2", "statement": "SSVI training FLOPs are up to 20× lower than dense VI's (≈ 1/d)",
            "verdict": _verdict(checks), "summary": summary, "definition": definition, "numbers": numbers}


def claim_c3(stats: pd.DataFrame) -> dict:
    numbers, checks = [], []
    baselines = [m for m in dict.fromkeys(stats["method"]) if m == "gradual_pruning" or m.startswith("posthoc")]
    for _, ssvi in stats[stats["method"] == "ssvi"].iterrows():
        for baseline in baselines:
            other = _cell(stats, ssvi["dataset"], ssvi["arch"], baseline, ssvi["density"])
            if other is None:
                continue
            checks.append(bool(ssvi["acc_pct_mean"] >= other["acc_pct_mean"]))
            numbers.append({"dataset": ssvi["dataset"], "arch": ssvi["arch"], "density": ssvi["density"],
                            "baseline": baseline, "ssvi_acc": ssvi["acc_pct_mean"],
                            "baseline_acc": other["acc_pct_mean"],
                            "margin_points": ssvi["acc_pct_mean"] - other["acc_pct_mean"],
                            "status": "pass" if checks[-1] else "fail"})
    worst = min(numbers, key=lambda n: n["margin_points"], default=None)
    summary = "no density with SSVI and a gradual-pruning or post-hoc run" if worst is None else (
        f"{sum(checks)}/{len(checks)} comparisons won; smallest margin {worst['margin_points']:+.2f} points "
        f"(vs {worst['baseline']}, {worst['dataset']}/{worst['arch']}, d = {worst['density']:g})")
    definition = ("For each dataset × arch × density with SSVI: SSVI mean acc ≥ mean acc of gradual_pruning and of "
                  "every post-hoc fine-tune variant at that density (seed means, default recipe). holds: every "
                  "comparison made is won; fails: some is lost; not enough runs: no comparison possible.")
    return {"claim": "C3", "statement": "SSVI beats the gradual-pruning and post-hoc baselines at equal density",
            "verdict": _verdict(checks), "summary": summary, "definition": definition, "numbers": numbers}


def claim_c4(robust: pd.DataFrame) -> dict:
    cells = {m: robust[robust["method"] == m].set_index(["sigma_init", "kl_scale"])["acc_pct_mean"]
             for m in ("dense_vi", "ssvi")}
    shared = sorted(set(cells["dense_vi"].index) & set(cells["ssvi"].index))
    numbers, checks = [], []
    if len(shared) >= 2:
        stat = {m: {"worst": cells[m].loc[shared].min(), "best": cells[m].loc[shared].max(),
                    "range": cells[m].loc[shared].max() - cells[m].loc[shared].min(),
                    "std": cells[m].loc[shared].std(ddof=1)} for m in cells}
        checks = [bool(stat["ssvi"]["range"] <= stat["dense_vi"]["range"]),
                  bool(stat["ssvi"]["worst"] >= stat["dense_vi"]["worst"])]
        numbers = [{"method": m, "cells": len(shared), **{f"acc_{k}": v for k, v in s.items()}}
                   for m, s in stat.items()]
        summary = (f"over {len(shared)} shared cells: range SSVI {stat['ssvi']['range']:.2f} vs dense VI "
                   f"{stat['dense_vi']['range']:.2f} points; worst SSVI {stat['ssvi']['worst']:.2f} vs dense VI "
                   f"{stat['dense_vi']['worst']:.2f}%; std SSVI {stat['ssvi']['std']:.2f} vs dense VI "
                   f"{stat['dense_vi']['std']:.2f}")
    else:
        summary = f"{len(shared)} σ-init × KL cells with both dense VI and SSVI runs (need ≥ 2)"
    definition = ("Over the σ-init × KL-scale cells where both dense VI and SSVI ran (≥ 2 cells), with per-cell "
                  "seed-mean acc: holds if SSVI's spread (max − min) ≤ dense VI's AND SSVI's worst cell ≥ dense VI's "
                  "worst cell; fails otherwise; std over cells is reported, not used.")
    return {"claim": "C4", "statement": "SSVI is more robust than dense VI across the hyperparameter grid",
            "verdict": _verdict(checks), "summary": summary, "definition": definition, "numbers": numbers}


def claim_c5(stats: pd.DataFrame) -> dict:
    numbers = []
    for _, ssvi in stats[stats["method"] == "ssvi"].iterrows():
        dense = _cell(stats, ssvi["dataset"], ssvi["arch"], "dense_vi", 1.0)
        if dense is None:
            continue
        for m in ("acc_pct", "nll", "ece", "ece_ssvi"):
            if pd.isna(ssvi[f"{m}_mean"]) or pd.isna(dense[f"{m}_mean"]):
                continue
            ok = at_least_as_good(ssvi[f"{m}_mean"], ssvi[f"{m}_std"], dense[f"{m}_mean"], dense[f"{m}_std"],
                                  HIGHER_IS_BETTER[m])
            numbers.append({"dataset": ssvi["dataset"], "arch": ssvi["arch"], "density": ssvi["density"], "metric": m,
                            "ssvi": ssvi[f"{m}_mean"], "dense_vi": dense[f"{m}_mean"], "matches_or_beats": ok})
    wins = [n for n in numbers if n["matches_or_beats"]]
    verdict = NOT_ENOUGH if not numbers else (HOLDS if wins else FAILS)
    summary = "no SSVI run with a dense VI run of the same dataset/arch" if not numbers else (
        f"{len(wins)}/{len(numbers)} (density, metric) pairs match or beat dense VI"
        + (": " + ", ".join(f"{n['dataset']}/{n['arch']} d={n['density']:g} {SHORT[n['metric']]}" for n in wins[:6])
           if wins else ""))
    definition = ("For each dataset × arch × SSVI density and each metric in {acc, NLL, ECE top-label, ECE "
                  "authors'}: SSVI matches or beats dense VI if its seed mean is at least as good within the larger "
                  "of the two seed stds (0 when n = 1). holds: at least one (density, metric) pair does; fails: none does.")
    return {"claim": "C5", "statement": "SSVI sometimes matches or beats dense VI on accuracy and uncertainty metrics",
            "verdict": verdict, "summary": summary, "definition": definition, "numbers": numbers}


def _matches_dense(stats: pd.DataFrame, metric: str, extra_keys: list[str]) -> list[dict]:
    """Every SSVI row against dense VI (d = 1) of the same dataset, arch and ``extra_keys``: seed means, stds
    and at_least_as_good (within the larger seed std)."""
    numbers = []
    for _, ssvi in stats[stats["method"] == "ssvi"].iterrows():
        extra = {k: ssvi[k] for k in extra_keys}
        dense = _cell(stats, ssvi["dataset"], ssvi["arch"], "dense_vi", 1.0, **extra)
        if dense is None or pd.isna(ssvi[f"{metric}_mean"]) or pd.isna(dense[f"{metric}_mean"]):
            continue
        ok = at_least_as_good(ssvi[f"{metric}_mean"], ssvi[f"{metric}_std"], dense[f"{metric}_mean"],
                              dense[f"{metric}_std"], HIGHER_IS_BETTER[metric])
        numbers.append({"dataset": ssvi["dataset"], "arch": ssvi["arch"], "density": ssvi["density"], **extra,
                        "metric": metric, "ssvi": ssvi[f"{metric}_mean"], "ssvi_std": ssvi[f"{metric}_std"],
                        "dense_vi": dense[f"{metric}_mean"], "dense_vi_std": dense[f"{metric}_std"],
                        "matches_or_beats": ok})
    return numbers


def _some_verdict(numbers: list[dict]) -> str:
    return NOT_ENOUGH if not numbers else (HOLDS if any(n["matches_or_beats"] for n in numbers) else FAILS)


def claim_c5_ood(ood: pd.DataFrame) -> dict:
    numbers = _matches_dense(ood, "auroc", ["ood_set", "score"])
    wins = [n for n in numbers if n["matches_or_beats"]]
    best = max(numbers, key=lambda n: n["ssvi"] - n["dense_vi"], default=None)
    summary = "no SSVI run with a dense VI run of the same dataset/arch and OOD evaluation" if best is None else (
        f"{len(wins)}/{len(numbers)} (density, OOD set, score) triples match or beat dense VI; best: "
        f"{best['dataset']}/{best['arch']} d={best['density']:g} {best['ood_set']}/{best['score']} AUROC SSVI "
        f"{pm(best['ssvi'], best['ssvi_std'], '.4f')} vs dense VI {pm(best['dense_vi'], best['dense_vi_std'], '.4f')}")
    definition = ("For each dataset × arch × SSVI density, OOD set and score (max_prob, neg_entropy, "
                  "neg_mutual_info; higher = more in-distribution): SSVI matches or beats dense VI if its seed-mean "
                  "AUROC ≥ dense VI's − the larger of the two seed stds (0 when n = 1). holds: at least one "
                  "(density, OOD set, score) triple does; fails: none does; not enough runs: no pair with OOD "
                  "results (ood_shift.json).")
    return {"claim": "C5-ood", "statement": "SSVI's OOD detection (AUROC, any score) matches or beats dense VI's at "
            "some density", "verdict": _some_verdict(numbers), "summary": summary, "definition": definition,
            "numbers": numbers}


def claim_c5_shift(shift: pd.DataFrame) -> dict:
    overall = shift[shift["severity"].astype(str) == SEVERITY_ALL] if not shift.empty else shift
    numbers = _matches_dense(overall, "acc_pct", [])
    wins = [n for n in numbers if n["matches_or_beats"]]
    best = max(numbers, key=lambda n: n["ssvi"] - n["dense_vi"], default=None)
    summary = "no SSVI run with a dense VI run of the same dataset/arch and shift results" if best is None else (
        f"{len(wins)}/{len(numbers)} densities match or beat dense VI; best: {best['dataset']}/{best['arch']} "
        f"d={best['density']:g} corrupted acc SSVI {pm(best['ssvi'], best['ssvi_std'], '.2f')} vs dense VI "
        f"{pm(best['dense_vi'], best['dense_vi_std'], '.2f')} %")
    definition = ("For each dataset × arch × SSVI density: corrupted accuracy = per run the mean accuracy over every "
                  "corruption and severity 1–5 (table shift, severity 'all'); SSVI matches or beats dense VI if its "
                  "seed mean ≥ dense VI's − the larger of the two seed stds (0 when n = 1). holds: at least one "
                  "density does; fails: none does; not enough runs: no pair with shift results (ood_shift.json).")
    return {"claim": "C5-shift", "statement": "SSVI's accuracy under corruption (mean over corruptions and "
            "severities) matches or beats dense VI's at some density", "verdict": _some_verdict(numbers),
            "summary": summary, "definition": definition, "numbers": numbers}


def claim_c6(criteria: pd.DataFrame) -> dict:
    cells = criteria.set_index("criterion")
    checks, numbers = [], []
    if {"SNR_mean_abs", "mean"} <= set(cells.index):
        snr, mean = cells.loc["SNR_mean_abs"], cells.loc["mean"]
        checks = [at_least_as_good(snr["acc_pct_mean"], snr["acc_pct_std"], mean["acc_pct_mean"],
                                   mean["acc_pct_std"], higher_is_better=True)]
        numbers = [{"criterion": c, "acc_mean": cells.loc[c, "acc_pct_mean"], "acc_std": cells.loc[c, "acc_pct_std"],
                    "n": int(cells.loc[c, "n"])} for c in ("SNR_mean_abs", "mean")]
        summary = (f"acc SNR(|θ|) {pm(snr['acc_pct_mean'], snr['acc_pct_std'], '.2f')} vs "
                   f"|μ| {pm(mean['acc_pct_mean'], mean['acc_pct_std'], '.2f')} %")
    else:
        summary = "criteria ablation lacks the SNR_mean_abs or the mean run"
    definition = ("In the criteria ablation: holds if mean acc(SNR_mean_abs) ≥ mean acc(mean) − max(std of the "
                  "two) (std 0 when n = 1); fails otherwise.")
    return {"claim": "C6", "statement": "The SNR(|θ|) criterion is at least as good as |μ|",
            "verdict": _verdict(checks), "summary": summary, "definition": definition, "numbers": numbers}


def evaluate_claims(stats: pd.DataFrame, criteria: pd.DataFrame, robust: pd.DataFrame, config: dict,
                    ood: pd.DataFrame | None = None, shift: pd.DataFrame | None = None) -> list[dict]:
    """C1-C6 in order, C5-ood and C5-shift after C5 (not enough runs without OOD / shift stats)."""
    claims = config.get("claims") or {}
    ood = seed_stats(pd.DataFrame(), [*CELL_KEYS, "ood_set", "score"], OOD_METRICS) if ood is None else ood
    shift = seed_stats(pd.DataFrame(), [*CELL_KEYS, "severity"], METRICS) if shift is None else shift
    return [claim_c1(stats, float(claims.get("acc_drop_points", 3.0))),
            claim_c2(stats, float(claims.get("flops_reduction_target", 20.0))),
            claim_c3(stats), claim_c4(robust), claim_c5(stats), claim_c5_ood(ood), claim_c5_shift(shift),
            claim_c6(criteria)]


def claims_table(claims: list[dict], n_runs: int, ns) -> Table:
    data = pd.DataFrame([{k: c[k] for k in ("claim", "statement", "verdict", "summary", "definition")} for c in claims])
    text = (f"Claims of the paper (reference section 7) checked on {n_runs} finished runs: verdict, the numbers "
            f"behind it (seed means), the exact rule")
    return Table("claims", data, data.rename(columns={"summary": "numbers"}), caption(text, ns))


# ======================================================================================================
# writing
# ======================================================================================================

TEX_SUBSTITUTIONS = {"±": r"$\pm$", "×": r"$\times$", "÷": r"$\div$", "−": "$-$", "—": "---", "–": "--",
                     "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "∈": r"$\in$", "μ": r"$\mu$",
                     "σ": r"$\sigma$", "θ": r"$\theta$", "|": r"\textbar{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (captions)."""
    text = text.replace("\\", "\0")
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    text = text.replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    return text.replace("\0", r"\textbackslash{}")


def to_latex(table: Table) -> str:
    display = table.display.astype(str) if not table.display.empty else table.display
    body = display.to_latex(index=False, escape=True, caption=tex_escape(table.caption),
                            label=f"tab:{table.name.replace('_', '-')}")
    for char, repl in TEX_SUBSTITUTIONS.items():
        body = body.replace(char, repl)
    return body


def to_markdown(table: Table) -> str:
    def md(frame: pd.DataFrame) -> str:
        cells = frame.map(lambda v: str(v).replace("|", "\\|")).rename(columns=lambda c: str(c).replace("|", "\\|"))
        return cells.to_markdown(index=False, disable_numparse=True)

    parts = [f"**{table.name}** — {table.caption}", ""]
    if table.display.empty:
        parts += ["_No runs for this table._", ""]
    if table.blocks and not table.display.empty:
        for key, block in table.display.groupby(table.blocks, sort=False):
            block = block.drop(columns=table.blocks)
            if table.prune_blocks:
                block = block.loc[:, ~block.astype(str).eq("—").all()]
            parts += [f"### {' / '.join(map(str, key))}", "", md(block), ""]
    else:
        parts += [md(table.display), ""]
    return "\n".join(parts)


def write_table(table: Table, out: Path) -> list[Path]:
    paths = [out / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    table.data.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(table))
    paths[2].write_text(to_latex(table))
    return paths


# ======================================================================================================
# entry points
# ======================================================================================================

def build_tables(runs: pd.DataFrame, config: dict, expected_path=DEFAULT_EXPECTED,
                 evals: Evaluations | None = None) -> tuple[list[Table], list[dict]]:
    """Every table and the claims; ``evals`` = the runs' ood_shift.json (read here when None)."""
    evals = load_evaluations(runs) if evals is None else evals
    stats = main_stats(runs, config)
    expected, tolerances = load_expected(expected_path)
    comparison = paper_comparison(stats, expected, tolerances)
    criteria = criteria_table(runs, config)
    robustness = robustness_tables(runs, config)
    ood = ood_stats(runs, evals, config)
    shift = shift_tables(runs, evals, config)
    claims = evaluate_claims(stats, criteria.data, robustness[0].data, config, ood, shift[0].data)
    tables = [main_table(stats, comparison), comparison_table(comparison), density_sweep_table(stats), criteria,
              *overlap_tables(runs, config), *robustness, ood_table(ood, evals, runs), *shift,
              claims_table(claims, len(runs), stats["n"])]
    return tables, claims


def aggregate(config: dict, out, run_dirs=None, expected=DEFAULT_EXPECTED, allow_missing: bool = False,
              require_eval: bool = False) -> dict:
    """Load the runs and their ood_shift.json, write every table (+ runs.csv, claims.json) into ``out``;
    return {name: Table}. ``require_eval``: a finished run without ood_shift.json raises MissingEvalError."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(config, run_dirs, allow_missing)
    evals = load_evaluations(runs, require_eval)
    runs["evaluated"] = [(Path(d) / EVAL_FILE).is_file() for d in runs["run_dir"]]
    tables, claims = build_tables(runs, config, expected, evals)
    runs.to_csv(out / "runs.csv", index=False)
    for table in tables:
        write_table(table, out)
    (out / "claims.json").write_text(json.dumps(
        {"n_runs": len(runs), "config": config.get("claims", {}), "claims": claims}, indent=1, default=_json_default))
    log.info("%d runs -> %d tables in %s", len(runs), len(tables), out)
    return {t.name: t for t in tables}


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="workflow config (YAML or JSON), e.g. config/config.yaml")
    parser.add_argument("--out", default="results/tables", help="output folder of the tables")
    parser.add_argument("--expected", type=Path, default=None,
                        help=f"the paper's values, null = not filled (default: {DEFAULT_EXPECTED.relative_to(REPO)})")
    parser.add_argument("--allow-missing", action="store_true", help="skip run dirs without metrics.json")
    parser.add_argument("--require-eval", action="store_true",
                        help=f"a finished run without {EVAL_FILE} (python -m ssvi evaluate) is an error naming it "
                             "(default: such runs just have no OOD / shift values)")
    parser.add_argument("run_dirs", nargs="*", help="finished run dirs (default: every run of the config's grid)")
    args = parser.parse_args(argv)
    if args.expected is not None and not args.expected.is_file():
        parser.error(f"--expected {args.expected} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = yaml.safe_load(Path(args.config).read_text())
    try:
        tables = aggregate(config, args.out, args.run_dirs or None, args.expected or DEFAULT_EXPECTED,
                           args.allow_missing, args.require_eval)
    except (MissingRunsError, MissingEvalError, EvalFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for claim in json.loads((Path(args.out) / "claims.json").read_text())["claims"]:
        print(f"{claim['claim']}: {claim['verdict']:16s} {claim['summary']}")
    print(f"wrote {len(tables)} tables (csv, md, tex) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
