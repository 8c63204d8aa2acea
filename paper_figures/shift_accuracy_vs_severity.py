"""Distribution shift: test accuracy against corruption severity (1-5, accuracy averaged over the
corruptions), every density: one row of panels per dataset x architecture, one panel per sparse density
(titled "d = ..."), each with every sparse method at that density and dense VI (density 1, dashed, the same
in every panel of the row). "clean" is the uncorrupted test accuracy of table ``main``. Error bars = std
over seeds. Reads ``shift.csv`` (and ``main.csv``) written by aggregate.py.

    python paper_figures/shift_accuracy_vs_severity.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "shift_accuracy_vs_severity"
DENSE = "dense_vi"


def curve(shift: pd.DataFrame, main: pd.DataFrame, dataset: str, arch: str, method: str, density: float):
    """(x, mean, std) of one cell: x = 0 (clean, when main.csv has the cell) then the severities."""
    at = lambda f: f[(f["dataset"] == dataset) & (f["arch"] == arch) & (f["method"] == method)  # noqa: E731
                     & ((f["density"] - density).abs() < 1e-9)]
    rows = at(shift)
    rows = rows[rows["severity"] != "all"].assign(x=lambda f: f["severity"].astype(int)).sort_values("x")
    clean = at(main) if not main.empty else main
    if not clean.empty:
        rows = pd.concat([pd.DataFrame({"x": [0], "acc_pct_mean": [clean["acc_pct_mean"].iloc[0]],
                                        "acc_pct_std": [clean["acc_pct_std"].iloc[0]]}), rows])
    return rows["x"], rows["acc_pct_mean"], common.zero_nan(rows["acc_pct_std"])


def draw(tables: Path):
    shift = common.read_table(tables, "shift")
    if shift.empty or shift["acc_pct_mean"].isna().all():  # no runs, or the shift set was not evaluated
        return None
    shift = shift.assign(severity=shift["severity"].astype(str))
    main = common.read_table(tables, "main")
    styles = common.method_styles(shift["method"])
    blocks = common.blocks(shift)
    densities = sorted({d for d in shift.loc[shift["method"] != DENSE, "density"]}, reverse=True) or [None]
    panels = [(d, a, density) for d, a in blocks for density in densities]
    fig, axes = common.panel_grid(len(panels), ncols=len(densities), size=(4.2, 3.3))
    for ax, (dataset, arch, density) in zip(axes, panels):
        block = shift[(shift["dataset"] == dataset) & (shift["arch"] == arch)]
        at_density = block if density is None else block[(block["density"] - density).abs() < 1e-9]
        methods = [m for m in dict.fromkeys(block["method"]) if m == DENSE or m in set(at_density["method"])]
        if not methods:
            ax.text(0.5, 0.5, common.EMPTY_MESSAGE, ha="center", va="center", transform=ax.transAxes)
        for method in methods:
            x, mean, std = curve(shift, main, dataset, arch, method, 1.0 if method == DENSE else density)
            dense = method == DENSE
            ax.errorbar(x, mean, yerr=std, label=method + (" (d = 1)" if dense else ""), capsize=2, markersize=5,
                        linewidth=1, linestyle="--" if dense else "-", **styles[method])
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set_xlabel("corruption severity")
        ax.set_ylabel("test accuracy (%)")
        where = "dense VI only" if density is None else f"d = {density:g} (dense VI: d = 1)"
        ax.set_title(f"{dataset} / {arch}, {where}", fontsize=9)
        ax.grid(alpha=0.3)
    legend_rows = common.figure_legend(fig, axes, ncol=5)
    fig.suptitle(f"Accuracy under corruption vs severity, mean over corruptions (mean ± std over seeds, "
                 f"{common.seeds_text(shift['n'][shift['n'] > 0])}; one panel per density)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 * legend_rows / max(1, len(blocks)) ** 0.5 + 0.02, 1, 1))
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
