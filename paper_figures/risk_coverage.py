"""Risk–coverage curves (selective prediction): the error rate of the most confident fraction of the test set
against that fraction, for every method at every density it ran. One row of panels per dataset x architecture,
one panel per density (ensembles at their members' summed density; a method's dense variants and dense ensembles
in a "d ≥ 1" panel), at most five methods a panel (more: a second panel of that density); dense VI, dashed, in
every panel for reference; the band is the std over seeds. A curve that stays low while coverage grows ranks its
errors last: its confidence knows what it does not know. The areas under the curves are the AURC column of table
``main``. Reads ``risk_coverage.csv`` written by aggregate.py.

    python paper_figures/risk_coverage.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "risk_coverage"
NCOLS = 4


def _curve(ax, rows, style, label, dashed):
    rows = rows.sort_values("coverage")
    ax.plot(rows["coverage"], 100 * rows["risk_mean"], color=style["color"], linewidth=1.3, label=label,
            linestyle="--" if dashed else "-")
    spread = 100 * common.zero_nan(rows["risk_std"])
    ax.fill_between(rows["coverage"], 100 * rows["risk_mean"] - spread, 100 * rows["risk_mean"] + spread,
                    color=style["color"], alpha=0.12, linewidth=0)


def draw(tables: Path):
    data = common.read_table(tables, "risk_coverage")
    if data.empty:
        return None
    styles = common.method_styles(data["method"])
    panels = [panel for block in common.blocks(data)
              for panel in common.density_panels(data[(data["dataset"] == block[0]) & (data["arch"] == block[1])],
                                                 block)]
    nrows, ncols, positions = common.block_layout(panels, NCOLS)
    fig, grid = common.plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows), squeeze=False,
                                    layout="constrained")
    used = set(positions)
    for (row, column), ax in ((divmod(i, ncols), ax) for i, ax in enumerate(grid.flat)):
        if (row, column) not in used:
            ax.remove()
    for panel, (row, column) in zip(panels, positions):
        ax = grid[row][column]
        block = data[(data["dataset"] == panel.block[0]) & (data["arch"] == panel.block[1])]
        reference = block[block["method"] == common.DENSE]
        if not reference.empty and all(method != common.DENSE for method, _ in panel.cells):
            _curve(ax, reference, styles[common.DENSE], f"{common.DENSE} (reference, d 1)", dashed=True)
        for method, density in panel.cells:
            label = f"{common.DENSE} (reference, d 1)" if method == common.DENSE else method
            _curve(ax, common.cell_rows(block, method, density), styles[method], label, method == common.DENSE)
        ax.set_xlim(0, 1)
        # symlog: a chance-level method (post-hoc without fine-tuning) would squash every other curve near 0
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 0.5, 1, 2, 5, 10, 20, 50, 100], ["0", "0.5", "1", "2", "5", "10", "20", "50", "100"])
        ax.set_xlabel("coverage (most confident first)", fontsize=8)
        ax.set_ylabel("risk: error rate (%, symlog)", fontsize=8)
        ns = [int(common.cell_rows(block, m, d)["n"].iloc[0]) for m, d in panel.cells]
        ax.set_title(f"{panel.block[0]} / {panel.block[1]}, {panel.title} ({common.seeds_text(ns)})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    common.figure_legend(fig, [grid[r][c] for r, c in positions], ncol=4)
    fig.suptitle(f"Risk–coverage of every method at every density (mean ± std over seeds, "
                 f"{common.seeds_text(data['n'])}; dashed: dense VI; y linear below 1%, logarithmic above)",
                 fontsize=10)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
