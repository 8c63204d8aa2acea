"""Which runs belong to which study, and the order of table rows.

Takes the runs table (``ssvi.report.runs.RUN_COLUMNS``) and the workflow config; gives the runs of the
main comparison (default recipe, post-hoc per fine-tune epochs), of the criteria ablation, of the
robustness grid and of the schedule ablation (contract C-D: SSVI runs identified by their recorded
delta_t / alpha and variant ``dt..-a..`` or ``default``), and ``sort_cells``: config order of dataset,
arch and method, density descending.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from .runs import grid


def close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def in_values(series: pd.Series, values) -> pd.Series:
    return series.map(lambda v: any(close(v, x) for x in values))


def method_order(config: dict, methods) -> list[str]:
    order = ["dense_vi", *config.get("methods", {})]
    order += sorted(set(methods) - set(order))
    return list(dict.fromkeys(order))


FT_EPOCHS = re.compile(r"\(ft (\d+)")


def natural(text: str) -> tuple:
    """Sort key reading the numbers in ``text`` as numbers ('kl_factor 0.5' before 'kl_factor 2')."""
    return tuple((0, float(part), "") if re.fullmatch(r"\d+(\.\d*)?", part) else (1, 0.0, part)
                 for part in re.findall(r"\d+(?:\.\d*)?|\D+", text))


def sort_cells(stats: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Config order of dataset, arch, method (posthoc by fine-tune epochs; a method's options by their values),
    density descending."""
    if stats.empty:
        return stats
    datasets, archs = list(config.get("datasets", [])), list(config.get("archs", []))
    methods = method_order(config, [label.split(" ")[0] for label in stats["method"]])

    def key(row):
        base = row["method"].split(" ")[0]
        ft = FT_EPOCHS.search(row["method"])
        rank = lambda seq, x: (seq.index(x) if x in seq else len(seq), x)  # noqa: E731
        return (*rank(datasets, row["dataset"]), *rank(archs, row["arch"]), *rank(methods, base),
                int(ft[1]) if ft else -1, natural(row["method"]), -row["density"])

    return stats.iloc[sorted(range(len(stats)), key=lambda i: key(stats.iloc[i]))].reset_index(drop=True)


def ranked(frame: pd.DataFrame, column: str, order: list) -> pd.DataFrame:
    """Stable sort by the position of ``column``'s values in ``order`` (unknown values last, as found)."""
    order = list(dict.fromkeys([*order, *frame[column]]))
    return frame.sort_values(column, key=lambda col: col.map(order.index), kind="stable")


ENSEMBLE = "ensemble"  # the variant of the report layer's ensemble rows (ssvi.report.ensembles)


def main_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The default recipe of every method at the config's densities and main seeds (and the post-hoc fine-tune
    variants, the options of methods entries, and the ensembles); runs that only serve as ensemble members (extra
    seeds, other densities) are left out (column main_grid, ssvi.report.runs)."""
    base = runs["variant"].map(grid.base_variant)
    posthoc_ft = (runs["method"] == "posthoc") & base.str.startswith("ft")
    in_grid = runs["main_grid"].fillna(True).astype(bool) if "main_grid" in runs else True
    return runs[((base == grid.DEFAULT) | posthoc_ft | (runs["variant"] == ENSEMBLE)) & in_grid]


def main_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """main_runs with the method column replaced by its label (post-hoc rows: 'posthoc (ft E)')."""
    return main_runs(runs).assign(method=lambda f: f["label"]) if not runs.empty else runs


def _study(runs: pd.DataFrame, study: dict | None, method: str = "ssvi") -> pd.Series:
    return ((runs["dataset"] == study["dataset"]) & (runs["arch"] == study["arch"]) & (runs["method"] == method)
            & runs["density"].map(lambda d: close(d, study["density"])))


def _study_seeds(runs: pd.DataFrame, config: dict, study: dict) -> pd.Series:
    """The study's own seeds: its default-recipe cell is a main-grid run that may have more seeds, which would
    unbalance (and unpair) the study's comparisons."""
    return runs["seed"].isin(grid.study_seeds(config, study))


def ablation_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    ab = config.get("criteria_ablation")
    if not ab or runs.empty:
        return runs.iloc[0:0]
    return runs[_study(runs, ab) & _study_seeds(runs, config, ab)
                & ((runs["variant"] == grid.DEFAULT) | runs["variant"].str.startswith("crit-"))]


def robustness_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    rb = config.get("robustness")
    if not rb or runs.empty:
        return runs.iloc[0:0]
    density_ok = runs.apply(lambda r: close(r["density"], 1.0 if r["method"] == "dense_vi" else rb["density"]), axis=1)
    keep = ((runs["dataset"] == rb["dataset"]) & (runs["arch"] == rb["arch"]) & runs["method"].isin(rb["methods"])
            & density_ok & _study_seeds(runs, config, rb) & in_values(runs["sigma_init"], rb["sigma_init"])
            & in_values(runs["kl_scale"], rb["kl_scale"])
            & ((runs["variant"] == grid.DEFAULT) | runs["variant"].str.match(r"sigma.*-kl")))
    return runs[keep]


def schedule_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    sa = config.get("schedule_ablation")
    if not sa or runs.empty:
        return runs.iloc[0:0]
    keep = (_study(runs, sa) & _study_seeds(runs, config, sa) & in_values(runs["delta_t"], sa["delta_t"])
            & in_values(runs["alpha"], sa["alpha"])
            & ((runs["variant"] == grid.DEFAULT) | runs["variant"].str.match(r"dt\d+-a")))
    return runs[keep]
