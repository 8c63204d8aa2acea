"""Reliability diagrams of every method at every density it ran: accuracy against mean confidence per
equal-width confidence bin, one row of panels per dataset x architecture and one panel per density (ensembles at
their members' summed density; a method's dense variants and dense ensembles in a "d ≥ 1" panel), at most five
methods a panel (more: a second panel of that density), each method a line with markers, dense VI dashed in every
panel for reference. The test points of every seed of a cell are pooled; the strip under each panel counts the
points per bin (log scale), so a bin's accuracy can be weighed by how many points it rests on. The diagonal is
perfect calibration. Reads ``reliability.csv`` written by aggregate.py.

    python paper_figures/reliability_diagrams.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "reliability_diagrams"
NCOLS = 4
REFERENCE = f"{common.DENSE} (reference, d 1)"


def _method(ax, counts_ax, rows, style, label, dashed):
    rows = rows.sort_values("bin")
    used = rows["count"] > 0
    ax.plot(rows["confidence"][used], rows["accuracy"][used], marker=style["marker"], markersize=3.5, linewidth=1.1,
            color=style["color"], linestyle="--" if dashed else "-", label=label)
    counts_ax.stairs(rows["count"].clip(lower=0).to_numpy(), [*rows["bin_low"], rows["bin_high"].iloc[-1]],
                     color=style["color"], linewidth=1.0, linestyle="--" if dashed else "-")


def draw(tables: Path):
    data = common.read_table(tables, "reliability")
    if data.empty:
        return None
    styles = common.method_styles(data["method"])
    panels = [panel for block in common.blocks(data)
              for panel in common.density_panels(data[(data["dataset"] == block[0]) & (data["arch"] == block[1])],
                                                 block)]
    nrows, ncols, positions = common.block_layout(panels, NCOLS)
    fig = common.plt.figure(figsize=(3.6 * ncols, 4.1 * nrows), layout="constrained")
    outer = fig.add_gridspec(nrows, ncols)
    axes = []
    for panel, (row, column) in zip(panels, positions):
        inner = outer[row, column].subgridspec(2, 1, height_ratios=[3, 1])
        ax, counts_ax = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        block = data[(data["dataset"] == panel.block[0]) & (data["arch"] == panel.block[1])]
        reference = block[block["method"] == common.DENSE]
        if not reference.empty and all(method != common.DENSE for method, _ in panel.cells):
            _method(ax, counts_ax, reference, styles[common.DENSE], REFERENCE, dashed=True)
        for method, density in panel.cells:
            rows = common.cell_rows(block, method, density)
            _method(ax, counts_ax, rows, styles[method], REFERENCE if method == common.DENSE else method,
                    method == common.DENSE)
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=False)
        ns = [int(common.cell_rows(block, m, d)["n"].iloc[0]) for m, d in panel.cells]
        ax.set_title(f"{panel.block[0]} / {panel.block[1]}, {panel.title} ({common.seeds_text(ns)})", fontsize=8)
        ax.grid(alpha=0.3)
        counts_ax.set_yscale("symlog", linthresh=1)
        counts_ax.set_xlim(0, 1)
        counts_ax.set_xlabel("confidence (top-label probability)", fontsize=8)
        counts_ax.set_ylabel("points", fontsize=7)
        counts_ax.tick_params(labelsize=7)
        axes.append(ax)
    common.figure_legend(fig, axes, ncol=4)
    fig.suptitle("Reliability diagrams of every method at every density: accuracy against mean confidence per bin "
                 "(test points of every seed pooled), dashed: dense VI, dotted: perfect calibration;\nstrips: test "
                 f"points per bin (log scale); {common.seeds_text(data['n'])}", fontsize=9)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
