"""The comparison with the paper's reported values (the expected-values file, results/expected/paper.yaml).

Takes the main table's numbers (``ssvi.report.tables.main_stats``) and the expected file; gives the
``paper_comparison`` table (ours: mean, std, n, 95% interval; paper; ours − paper; verdict: |ours −
paper| ≤ tolerance, via DeepDiff's math_epsilon) and ``add_paper_columns``, the main table's paper
columns.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import yaml
from deepdiff import DeepDiff

from .columns import FORMATS, LABELS, METRICS, NO_RUNS, NOT_FILLED, OUTSIDE, WITHIN
from .render import Table, caption, pm
from .runs import REPO, number
from .select import close

log = logging.getLogger("aggregate")

DEFAULT_EXPECTED = REPO / "results" / "expected" / "paper.yaml"
# keys of the expected-values file -> our columns ("acc" there is in percent, like the paper's table)
EXPECTED_METRICS = {"acc": "acc_pct", "nll": "nll", "ece": "ece", "ece_ssvi": "ece_ssvi", "brier": "brier"}
DEFAULT_TOLERANCES = {"acc": 1.0, "nll": 0.05, "ece": 0.01, "ece_ssvi": 0.01, "brier": 0.01}


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
                                     **{f"ours_{b}": float(mine[f"{col}_{b}"].iloc[0]) if len(mine) else float("nan")
                                        for b in ("ci_low", "ci_high")},
                                     "n": int(mine["n"].iloc[0]) if len(mine) else 0,
                                     "paper": number(paper), "ours_minus_paper": diff, "tolerance": tol,
                                     "verdict": status})
    columns = ["dataset", "arch", "method", "density", "metric", "ours_mean", "ours_std", "ours_ci_low",
               "ours_ci_high", "n", "paper",
               "ours_minus_paper", "tolerance", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def paper_cell(row, metric: str) -> str:
    fmt = FORMATS[metric]
    if row["verdict"] in (NOT_FILLED, NO_RUNS):
        return row["verdict"]
    return (f"{row['paper']:{fmt}} (ours − paper {row['ours_minus_paper']:+{fmt}}; "
            f"{row['verdict']} ±{row['tolerance']:g})")


def add_paper_columns(data: pd.DataFrame, display: pd.DataFrame, comparison: pd.DataFrame) -> None:
    """Add to the main table, per metric with an expected entry: paper value, ours − paper and verdict
    (``data``) and the 'paper <metric>' cell (``display``)."""
    for metric in [m for m in METRICS if m in set(comparison["metric"])]:
        rows = comparison[comparison["metric"] == metric]
        keys = ["dataset", "arch", "method", "density"]
        merged = data[keys].merge(rows, on=keys, how="left")
        if merged["verdict"].isna().all():
            continue  # no expected entry for any row of this table
        for src, dst in (("paper", f"paper_{metric}"), ("ours_minus_paper", f"ours_minus_paper_{metric}"),
                         ("verdict", f"paper_verdict_{metric}")):
            data[dst] = merged[src].to_numpy()
        display[f"paper {LABELS[metric]}"] = [
            "—" if pd.isna(r["verdict"]) else paper_cell(r, metric) for _, r in merged.iterrows()]


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


