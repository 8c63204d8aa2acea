"""The data of the reliability diagrams and risk–coverage figures: every main-table cell (every method at every
density it ran, post-hoc per fine-tuning epochs, a method's options, ensembles at their summed budget, dense VI).

Takes the runs table and each run's curves (``metrics.json`` ``curves``, or recomputed from ``predictions.pt``;
ensembles from their members' stored probabilities); gives
- ``reliability``: per cell and equal-width confidence bin, the test points pooled over the cell's runs: count,
  mean confidence, accuracy (NaN in empty bins), and n (runs);
- ``risk_coverage``: per cell and coverage (1/50 .. 1), the risk's mean and std over the cell's runs, n.
The figure scripts (paper_figures/reliability_diagrams.py, risk_coverage.py) draw these CSVs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import CELL_KEYS
from .render import Table, caption, density_cell
from .select import main_cells, sort_cells

RELIABILITY_COLUMNS = [*CELL_KEYS, "bin", "bin_low", "bin_high", "count", "confidence", "accuracy", "n"]
RISK_COLUMNS = [*CELL_KEYS, "coverage", "risk_mean", "risk_std", "n"]


def figure_cells(runs: pd.DataFrame, curves: dict[str, dict]) -> pd.DataFrame:
    """Main-table runs that have curves."""
    cells = main_cells(runs)
    return cells[cells["run_dir"].map(lambda r: bool(curves.get(r)))] if not cells.empty else cells


def reliability_table(runs: pd.DataFrame, curves: dict[str, dict], config: dict) -> Table:
    rows = []
    cells = figure_cells(runs, curves)
    for key, group in cells.groupby(CELL_KEYS, sort=False):
        bins = [curves[r]["reliability"] for r in group["run_dir"]]
        size = bins[0]["bins"]
        count, confidence, correct = (np.sum([b[k] for b in bins], axis=0) for k in
                                      ("count", "confidence_sum", "correct_sum"))
        for index in range(size):
            used = count[index] > 0
            rows.append({**dict(zip(CELL_KEYS, key)), "bin": index, "bin_low": index / size,
                         "bin_high": (index + 1) / size, "count": int(count[index]),
                         "confidence": confidence[index] / count[index] if used else np.nan,
                         "accuracy": correct[index] / count[index] if used else np.nan, "n": len(group)})
    data = _sorted(pd.DataFrame(rows, columns=RELIABILITY_COLUMNS), config)
    display = data[CELL_KEYS].copy()
    display["density"] = display["density"].map(density_cell)
    display["confidence bin"] = [f"[{a:.3f}, {b:.3f})" for a, b in zip(data["bin_low"], data["bin_high"])]
    display["points"] = data["count"]
    display["mean confidence"] = data["confidence"].map(lambda v: "—" if pd.isna(v) else f"{v:.4f}")
    display["accuracy"] = data["accuracy"].map(lambda v: "—" if pd.isna(v) else f"{v:.4f}")
    display["n (seeds)"] = data["n"]
    text = ("Reliability diagram data of every main-table row (every method at every density it ran; ensembles at "
            "their members' summed density): per equal-width confidence bin of the posterior predictive's top-label confidence (the last bin "
            "closed), the test points of all the cell's runs pooled: their number, mean confidence and accuracy")
    return Table("reliability", data, display, caption(text, data["n"], "pooled over seeds"),
                 blocks=["dataset", "arch"])


def risk_coverage_table(runs: pd.DataFrame, curves: dict[str, dict], config: dict) -> Table:
    rows = []
    cells = figure_cells(runs, curves)
    for key, group in cells.groupby(CELL_KEYS, sort=False):
        curves_of = [curves[r]["risk_coverage"] for r in group["run_dir"]]
        risks = np.array([c["risk"] for c in curves_of])
        for j, coverage in enumerate(curves_of[0]["coverage"]):
            rows.append({**dict(zip(CELL_KEYS, key)), "coverage": coverage, "risk_mean": risks[:, j].mean(),
                         "risk_std": risks[:, j].std(ddof=1) if len(risks) > 1 else np.nan, "n": len(group)})
    data = _sorted(pd.DataFrame(rows, columns=RISK_COLUMNS), config)
    display = data[CELL_KEYS].copy()
    display["density"] = display["density"].map(density_cell)
    display["coverage"] = data["coverage"].map(lambda v: f"{v:.2f}")
    display["risk (error rate)"] = [f"{m:.4f} ± {'—' if pd.isna(s) else f'{s:.4f}'}"
                                    for m, s in zip(data["risk_mean"], data["risk_std"])]
    display["n (seeds)"] = data["n"]
    text = ("Risk–coverage curves of every main-table row (every method at every density it ran; ensembles at "
            "their members' summed density): the error rate of the most confident fraction (coverage) of the test set, ranked by the predictive's "
            "maximum probability (ties: their mean error)")
    return Table("risk_coverage", data, display, caption(text, data["n"], "risk: mean ± std over seeds (ddof = 1; "
                                                              "'—' for one seed)"), blocks=["dataset", "arch"])


def _sorted(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Cells in the main table's order, each cell's rows in their own order."""
    if frame.empty:
        return frame
    order = sort_cells(frame[CELL_KEYS].drop_duplicates(), config)
    rank = {tuple(r): i for i, r in enumerate(order[CELL_KEYS].itertuples(index=False))}
    position = frame[CELL_KEYS].apply(tuple, axis=1).map(rank)
    return frame.assign(_rank=position).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
