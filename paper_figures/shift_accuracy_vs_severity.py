"""Distribution shift: test accuracy against corruption severity (1-5, accuracy averaged over the
corruptions) of every method at every density it ran: one row of panels per dataset x architecture, one panel
per density that block ran (titled "d = ..."; ensembles at their members' summed density; a method's dense
variants and dense ensembles in a "d ≥ 1" panel), at most five methods a panel (more: a second panel of that
density), dense VI (density 1, dashed) in every panel for reference. A block gets no panel for a density none of
its methods ran. "clean" is the uncorrupted test accuracy of table ``main``. Error bars = std over seeds. Reads
``shift.csv`` (and ``main.csv``) written by aggregate.py.

    python paper_figures/shift_accuracy_vs_severity.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "shift_accuracy_vs_severity"
DENSE = common.DENSE
NCOLS = 4


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
    shift = shift[shift["acc_pct_mean"].notna()]
    main = common.read_table(tables, "main")
    styles = common.method_styles(shift["method"])
    panels = [panel for block in common.blocks(shift)
              for panel in common.density_panels(shift[(shift["dataset"] == block[0]) & (shift["arch"] == block[1])],
                                                 block)]
    nrows, ncols, positions = common.block_layout(panels, NCOLS)
    fig, grid = common.plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False,
                                    layout="constrained")
    used = set(positions)
    for index, ax in enumerate(grid.flat):
        if divmod(index, ncols) not in used:
            ax.remove()
    reference = f"{DENSE} (reference, d = 1)"
    for panel, (row, column) in zip(panels, positions):
        ax = grid[row][column]
        dataset, arch = panel.block
        block = shift[(shift["dataset"] == dataset) & (shift["arch"] == arch)]
        cells = list(panel.cells)
        if (block["method"] == DENSE).any() and all(method != DENSE for method, _ in cells):
            cells.insert(0, (DENSE, 1.0))
        for method, density in cells:
            x, mean, std = curve(shift, main, dataset, arch, method, density)
            dense, ensemble = method == DENSE, common.is_ensemble(method)
            ax.errorbar(x, mean, yerr=std, label=reference if dense else method, capsize=2, markersize=5, linewidth=1,
                        linestyle="--" if dense else ":" if ensemble else "-",
                        fillstyle="none" if ensemble else "full", **styles[method])
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set_xlabel("corruption severity")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset} / {arch}, {panel.title}", fontsize=9)
        ax.grid(alpha=0.3)
    common.figure_legend(fig, [grid[r][c] for r, c in positions], ncol=5)
    fig.suptitle(f"Accuracy under corruption vs severity, mean over corruptions (mean ± std over seeds, "
                 f"{common.seeds_text(shift['n'][shift['n'] > 0])}; one panel per density; dashed: dense VI)",
                 fontsize=10)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
