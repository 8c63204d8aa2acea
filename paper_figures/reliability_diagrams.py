"""Reliability diagrams: accuracy against confidence per equal-width confidence bin, one row of panels per
dataset x architecture and one panel per method at the main density (config ``main_density``; ensembles whose
members' densities add up to it), with dense VI drawn in every panel for reference. The test points of every
seed of a cell are pooled; the bar under each panel counts the points per bin (log scale), so a bin's
accuracy can be weighed by how many points it rests on. The diagonal is perfect calibration. Reads
``reliability.csv`` written by aggregate.py.

    python paper_figures/reliability_diagrams.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "reliability_diagrams"
DENSE = "dense_vi"
NCOLS = 4


def _panel(ax, counts_ax, rows, style, label, reference=None, reference_style=None):
    width = rows["bin_high"] - rows["bin_low"]
    used = rows["count"] > 0
    ax.bar(rows["bin_low"][used], rows["accuracy"][used], width=width[used], align="edge", alpha=0.55,
           color=style["color"], edgecolor="black", linewidth=0.4, label=label)
    if reference is not None:
        ref_used = reference["count"] > 0
        ax.plot(reference["confidence"][ref_used], reference["accuracy"][ref_used], marker="o", markersize=3,
                linewidth=1, color=reference_style["color"], label=f"{DENSE} (reference)")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.tick_params(labelsize=7, labelbottom=False)
    counts_ax.bar(rows["bin_low"], rows["count"].clip(lower=0), width=width, align="edge", color=style["color"],
                  alpha=0.8)
    if reference is not None:  # dense VI's counts as an outline, for comparison
        counts_ax.stairs(reference["count"].to_numpy(), [*reference["bin_low"], reference["bin_high"].iloc[-1]],
                         color=reference_style["color"], linewidth=0.9)
    counts_ax.set_yscale("symlog", linthresh=1)
    counts_ax.set_xlim(0, 1)
    counts_ax.set_xlabel("confidence (top-label probability)", fontsize=8)
    counts_ax.set_ylabel("points", fontsize=7)
    counts_ax.tick_params(labelsize=7)


def draw(tables: Path):
    data = common.read_table(tables, "reliability")
    if data.empty:
        return None
    styles = common.method_styles(data["method"])
    blocks = common.blocks(data)
    panels = [(d, a, m, density) for d, a in blocks
              for m, density in dict.fromkeys(zip(*(data.loc[(data["dataset"] == d) & (data["arch"] == a), k]
                                                    for k in ("method", "density")))) if m != DENSE]
    if not panels:
        return None
    rows_of_panels = -(-len(panels) // NCOLS)
    fig = plt.figure(figsize=(3.3 * min(NCOLS, len(panels)), 4.0 * rows_of_panels))
    outer = fig.add_gridspec(rows_of_panels, min(NCOLS, len(panels)), hspace=0.55, wspace=0.35)
    for i, (dataset, arch, method, density) in enumerate(panels):
        inner = outer[divmod(i, NCOLS)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
        ax, counts_ax = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        block = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        rows = block[(block["method"] == method) & (block["density"] == density)].sort_values("bin")
        reference = block[block["method"] == DENSE].sort_values("bin")
        _panel(ax, counts_ax, rows, styles[method], method, reference if len(reference) else None, styles.get(DENSE))
        ax.set_title(f"{dataset} / {arch}\n{method}, d = {density:g} (n = {int(rows['n'].iloc[0])})", fontsize=8)
    fig.suptitle("Reliability diagrams at the main density: bars = the panel's method (test points of every seed "
                 "pooled), blue line = dense VI, dashed = perfect calibration;\nlower panels: test points per bin "
                 f"(bars: the method, outline: dense VI; log scale); {common.seeds_text(data['n'])}", fontsize=9)
    height = 4.0 * rows_of_panels
    fig.subplots_adjust(top=1 - 1.0 / height, bottom=0.6 / height)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
