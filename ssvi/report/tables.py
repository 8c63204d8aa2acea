"""The tables of the main comparison and of the training-setting studies, one function per table.

Takes the runs table (``ssvi.report.runs``) and the workflow config; gives ``Table``s whose ``data`` is
the plain DataFrame of numbers (``ssvi.report.stats.seed_stats`` columns: n, n_stale, <metric>_mean,
_std, _ci_low, _ci_high) and whose ``display`` holds the "mean ± std" cells:

    main              dataset x arch blocks, method x density rows; train FLOPs and train time with their
                      "dense VI ÷ this" ratios, the device; paper values (ssvi.report.paper)
    density_sweep     long format: dataset, arch, method, density, metric, mean, std, ci, n
    criteria          SSVI at the ablation density, one row per removal criterion
    robustness        method x σ-init x KL scale;  robustness_spread: spread per method
    schedule_ablation SSVI at the ablation density, one row per (ΔT, α) (contract C-D)
"""

from __future__ import annotations

import pandas as pd

from ..temperature import MIN_FIT_ERRORS, T_MAX, T_MIN
from ..temperature import RULE as TEMPERATURE_RULE
from .columns import (CALIBRATED, CELL_KEYS, FLOPS, FORMATS, LABELS, MAIN_METRICS, METRICS, NOT_AVAILABLE, TEMPERATURE,
                      TIME, TIME_NOTE, VIEWS, VIEWS_NOTE)
from .flags import CHANCE, NOT_CONVERGED, flag_cell, rule as flag_rule
from .paper import add_paper_columns
from .render import Table, caption, density_cell, n_cells, pm, pm_columns
from .runs import grid
from .select import ablation_runs, main_cells, robustness_runs, schedule_runs, sort_cells
from .stats import EXACT_METRICS, seed_stats


def devices(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per group of ``keys``: the devices its runs trained on ('; '-joined)."""
    return runs.groupby(keys, sort=False, dropna=False)["device"].agg(lambda d: "; ".join(dict.fromkeys(d)))


def main_stats(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Numbers of the main table: one row per dataset x arch x method label x density, with the training
    FLOPs and training-time ratios of dense VI of the same dataset and arch to each row; n_views = runs of
    the cell whose uncertainty views are known (recorded or recomputed from predictions.pt)."""
    cells = main_cells(runs)
    stats = sort_cells(seed_stats(cells, CELL_KEYS, MAIN_METRICS + CALIBRATED + [TEMPERATURE] + FLOPS + TIME), config)
    where = stats[CELL_KEYS].apply(tuple, axis=1)
    stats["device"] = where.map(devices(cells, CELL_KEYS).to_dict()) if not cells.empty else []
    for flag, column in ((CHANCE, "n_chance"), (NOT_CONVERGED, "n_not_converged")):
        counts = cells.groupby(CELL_KEYS, sort=False)[flag].sum().to_dict() if flag in cells and not cells.empty else {}
        stats[column] = where.map(counts).fillna(0).astype(int) if len(stats) else []
    for flag, column in (("t_unfitted", "n_t_unfitted"), ("t_at_limit", "n_t_at_limit")):
        counts = cells.groupby(CELL_KEYS, sort=False)[flag].apply(lambda v: int((v > 0).sum())).to_dict() \
            if flag in cells and not cells.empty else {}
        stats[column] = where.map(counts).fillna(0).astype(int) if len(stats) else []
    samples = cells.groupby(CELL_KEYS, sort=False)["num_samples"].mean().to_dict() if "num_samples" in cells else {}
    stats["num_samples"] = where.map(samples) if len(stats) else []
    known = cells.assign(known=cells["views_source"] != NOT_AVAILABLE) if not cells.empty else cells
    stats["n_views"] = (where.map(known.groupby(CELL_KEYS, sort=False)["known"].sum().to_dict()).fillna(0).astype(int)
                        if not cells.empty else [])
    dense = stats[stats["method"] == "dense_vi"].set_index(["dataset", "arch"])
    for column, mean in (("train_flops_reduction_vs_dense_vi", "train_flops_mean"),
                         ("train_time_ratio_vs_dense_vi", "train_time_s_mean")):
        stats[column] = [dense[mean].get((d, a), float("nan")) / value
                         for d, a, value in zip(stats["dataset"], stats["arch"], stats[mean])]
    return stats


def ratio_cell(ratio) -> str:
    return "—" if pd.isna(ratio) else f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def device_caption(stats: pd.DataFrame) -> str:
    names = list(dict.fromkeys(d for cell in stats.get("device", []) for d in str(cell).split("; ")))
    if len(names) <= 1:
        return f"training device: {names[0] if names else 'none (no runs)'}"
    return f"training devices: {', '.join(names)} (column device)"


def view_cells(stats: pd.DataFrame, metrics: list[str]) -> dict[str, list[str]]:
    """'mean ± std' of uncertainty views, 'not available' where no run of the cell has them."""
    cells = pm_columns(stats, metrics)
    return {label: [NOT_AVAILABLE if not known else cell for cell, known in zip(column, stats["n_views"])]
            for label, column in cells.items()}


def views_caption(stats: pd.DataFrame) -> str:
    missing = int((stats["n"] - stats["n_views"]).clip(lower=0).sum()) if not stats.empty else 0
    return (f"; {VIEWS_NOTE}" + (f"; '{NOT_AVAILABLE}': {missing} run(s) made before these views were recorded and "
                                 "without a predictions.pt to recompute them from (re-evaluate them: delete their "
                                 "metrics.json and re-run)" if missing else ""))


def main_table(stats: pd.DataFrame, comparison: pd.DataFrame, config: dict) -> Table:
    """``comparison``: ssvi.report.paper.paper_comparison, for the paper columns."""
    data, display = stats.copy(), stats[CELL_KEYS].copy()
    display["density"] = display["density"].map(density_cell)
    cells = {**pm_columns(stats, METRICS + FLOPS + TIME), **view_cells(stats, VIEWS)}
    for metric in METRICS + VIEWS:
        display[LABELS[metric]] = cells[LABELS[metric]]
    display[LABELS["train_flops"]] = cells[LABELS["train_flops"]]
    display["train FLOPs: dense VI ÷ this"] = stats["train_flops_reduction_vs_dense_vi"].map(ratio_cell)
    display[LABELS["train_time_s"]] = cells[LABELS["train_time_s"]]
    display["time: dense VI ÷ this"] = stats["train_time_ratio_vs_dense_vi"].map(ratio_cell)
    display[LABELS["test_flops"]] = cells[LABELS["test_flops"]]
    display["samples (K)"] = stats["num_samples"].map(lambda k: "—" if pd.isna(k) else f"{k:g}")
    if stats["device"].nunique() > 1:
        display["device"] = stats["device"]
    display["n (seeds)"] = n_cells(stats)
    display["flags"] = [flag_cell(a, b) for a, b in zip(stats["n_chance"], stats["n_not_converged"])]
    add_paper_columns(data, display, comparison)
    text = ("Main results (the paper's Table 1 layout), default recipe, final-epoch model, posterior predictive "
            "(deterministic_sparse: its one forward pass, raw; ensembles 'M ×': mean of M runs' predictive "
            "probabilities, density = the members' summed density, FLOPs and time = the members' sums, n = "
            "independent ensembles; an ensemble matches one run's active weights only: its training FLOPs, time and "
            "posterior samples K per prediction are the members' sums); post-hoc rows labelled with their fine-tune epochs (BatchNorm statistics "
            "re-estimated after pruning: one epoch of training batches in the LRT forward mode, no gradient step); "
            "'dense VI ÷ this' = ratio of the seed means of dense VI (same dataset and arch) to this row: "
            f"training-FLOPs reduction and training-time reduction; {TIME_NOTE}; {device_caption(stats)}"
            f"{views_caption(stats)}; {flag_rule(config)} (column flags: runs of the cell); 'paper' columns: values of the expected-values file (ours − paper, verdict "
            "within/outside tolerance)")
    return Table("main", data, display, caption(text, stats["n"]), blocks=["dataset", "arch"])


def calibrated_table(stats: pd.DataFrame) -> Table:
    """NLL, ECE, adaptive ECE and Brier before and after temperature scaling, and the fitted temperature."""
    data = stats[[*CELL_KEYS, "n", "n_stale", "n_views", "n_t_at_limit", "n_t_unfitted",
                  *[f"{m}_{s}" for m in ("nll", "ece", "ace", "brier", *CALIBRATED, TEMPERATURE)
                    for s in ("mean", "std", "ci_low", "ci_high")]]].copy()
    display = stats[CELL_KEYS].copy()
    display["density"] = display["density"].map(density_cell)
    raw, scaled = {**pm_columns(stats, ["nll", "ece", "brier"]), **view_cells(stats, ["ace"])}, \
        view_cells(stats, CALIBRATED + [TEMPERATURE])
    for metric in ("nll", "ece", "ace", "brier"):
        display[LABELS[metric]] = raw[LABELS[metric]]
        display[LABELS[f"t_{metric}"]] = scaled[LABELS[f"t_{metric}"]]
    display[LABELS[TEMPERATURE]] = scaled[LABELS[TEMPERATURE]]
    display["n (seeds)"] = n_cells(stats)
    display["temperature flags"] = [", ".join(p for p in (f"{a} at the search limit" if a else "",
                                                          f"{u} with a half too accurate to fit" if u else "") if p)
                                    for a, u in zip(stats["n_t_at_limit"], stats["n_t_unfitted"])]
    text = (f"Calibration after temperature scaling, every main-table row: {TEMPERATURE_RULE}; 'T-scaled' columns "
            "score each test point with the temperature fitted on the other half; T (fitted) = per run the mean of "
            f"its two temperatures (>1 softens, <1 sharpens); accuracy is unchanged by it; temperature flags: runs whose "
            f"fitted T sits at an end of the search range [{T_MIN:g}, {T_MAX:g}] (the best T may lie beyond it) and "
            f"runs with a half of fewer than {MIN_FIT_ERRORS} errors (no temperature fitted there: T = 1)"
            f"{views_caption(stats)}")
    return Table("calibrated", data, display, caption(text, stats["n"]), blocks=["dataset", "arch"])


def density_sweep_table(stats: pd.DataFrame) -> Table:
    fields = ("mean", "std", "ci_low", "ci_high")
    rows = [{**{k: r[k] for k in CELL_KEYS}, "metric": m, **{f: r[f"{m}_{f}"] for f in fields}, "n": r["n"],
             "n_stale": r["n_stale"]}
            for _, r in stats.iterrows() for m in MAIN_METRICS + CALIBRATED + FLOPS + TIME
            if m not in VIEWS + CALIBRATED or r["n_views"]]
    data = pd.DataFrame(rows, columns=[*CELL_KEYS, "metric", *fields, "n", "n_stale"])
    display = data[["dataset", "arch", "method"]].copy()
    display["density"] = data["density"].map(density_cell)
    display["metric"] = data["metric"].map(LABELS)
    display["value"] = [pm(a, b, FORMATS[m], *((lo, hi) if m not in EXACT_METRICS else (None, None)))
                        for a, b, m, lo, hi in zip(data["mean"], data["std"], data["metric"], data["ci_low"],
                                                   data["ci_high"])]
    display["n"] = n_cells(data)
    text = (f"Density sweep (long format): every metric of every method and density, default recipe "
            f"(T-scaled: after temperature scaling, {TEMPERATURE_RULE}); {TIME_NOTE}; {device_caption(stats)}"
            f"{views_caption(stats)} (such rows are left out)")
    return Table("density_sweep", data, display, caption(text, data["n"]))


def study_display(stats: pd.DataFrame, key_columns: dict, metrics: list[str] = METRICS) -> pd.DataFrame:
    """Display of a study table: the key columns (header -> cells), 'mean ± std' per metric, n."""
    display = pd.DataFrame({header: list(cells) for header, cells in key_columns.items()})
    for label, cells in pm_columns(stats, metrics).items():
        display[label] = cells
    display["n (seeds)"] = n_cells(stats)
    return display


def criteria_table(runs: pd.DataFrame, config: dict) -> Table:
    ab = config.get("criteria_ablation") or {}
    default = grid.recipe_defaults(config)["criterion"]
    stats = seed_stats(ablation_runs(runs, config), ["criterion"], METRICS)
    order = list(ab.get("criteria", []))
    stats = stats.sort_values("criterion", key=lambda s: s.map(lambda c: order.index(c) if c in order else len(order)),
                              kind="stable").reset_index(drop=True)
    stats.insert(1, "default", stats["criterion"] == default)
    display = study_display(stats, {"criterion": [c + (" (default)" if c == default else "")
                                                  for c in stats["criterion"]]})
    where = f"{ab.get('dataset')}/{ab.get('arch')}, d = {ab.get('density')}" if ab else "no criteria_ablation in config"
    text = f"Criteria ablation: SSVI per removal criterion ({where})"
    return Table("criteria", stats, display, caption(text, stats["n"]))


def robustness_tables(runs: pd.DataFrame, config: dict) -> list[Table]:
    rb = config.get("robustness") or {}
    stats = seed_stats(robustness_runs(runs, config), ["method", "sigma_init", "kl_scale"], METRICS)
    methods = list(rb.get("methods", []))
    if not stats.empty:
        stats = stats.assign(_m=stats["method"].map(lambda m: methods.index(m) if m in methods else len(methods)))
        stats = stats.sort_values(["_m", "sigma_init", "kl_scale"]).drop(columns="_m").reset_index(drop=True)
    display = study_display(stats, {"method": stats["method"], "σ-init": stats["sigma_init"].map(lambda s: f"{s:g}"),
                                    "KL scale": stats["kl_scale"].map(lambda s: f"{s:g}")})
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
                              caption(text, stats["n"], "cells are seed means (std over seeds: table robustness)",
                                      n_column=False))]


def robustness_spread(stats: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, cells in stats.groupby("method", sort=False):
        acc = cells["acc_pct_mean"]
        worst = cells.loc[acc.idxmin()] if acc.notna().any() else None
        where = "—" if worst is None else f"σ-init {worst['sigma_init']:g}, KL {worst['kl_scale']:g}"
        rows.append({"method": method, "cells": len(cells), "acc_min": acc.min(), "acc_max": acc.max(),
                     "acc_range": acc.max() - acc.min(), "acc_std": acc.std(ddof=1), "worst_cell": where})
    return pd.DataFrame(rows, columns=["method", "cells", "acc_min", "acc_max", "acc_range", "acc_std", "worst_cell"])


def schedule_table(runs: pd.DataFrame, config: dict) -> Table:
    """SSVI accuracy / NLL / ECE per subspace schedule (ΔT = steps between subspace updates, α = initial
    removal fraction) at the schedule ablation's dataset, arch and density."""
    sa = config.get("schedule_ablation") or {}
    stats = seed_stats(schedule_runs(runs, config), ["delta_t", "alpha"], METRICS)
    defaults = grid.recipe_defaults(config)
    if not stats.empty:
        stats = stats.sort_values(["delta_t", "alpha"], kind="stable").reset_index(drop=True)
    stats.insert(2, "default", [int(t) == int(defaults["delta_t"]) and float(a) == float(defaults["alpha"])
                                for t, a in zip(stats["delta_t"], stats["alpha"])])
    display = study_display(stats, {
        "ΔT (steps)": [f"{int(t)}" + (" (default)" if d else "") for t, d in zip(stats["delta_t"], stats["default"])],
        "α": stats["alpha"].map(lambda a: f"{a:g}")})
    where = (f"{sa.get('dataset')}/{sa.get('arch')}, d = {sa.get('density')}; ΔT ∈ {sa.get('delta_t')}, "
             f"α ∈ {sa.get('alpha')}" if sa else "no schedule_ablation in config: the study was not run")
    text = ("Subspace-schedule ablation (the paper's Figure 3, 'updating φ'): SSVI per ΔT (training steps between "
            f"subspace updates) and α (initial removal fraction, cosine-decayed) ({where})")
    return Table("schedule_ablation", stats, display, caption(text, stats["n"]))
