"""Figure 1 of the paper: training FLOPs (x, log scale, labelled at 1/2/5 × 10^k) against test accuracy
(y), one marker per method and density (each labelled d = ... in the nearest place that covers no marker, error
bar, line or other label and stays inside the panel, with a leader line when it sits further off), error bars =
std over seeds, n in the title; one panel per dataset x architecture. Ensembles sit at their FLOPs (the members'
sum) with hollow markers; their label is their budget (the members' summed density).
Reads ``main.csv`` (default recipe; post-hoc rows per fine-tune epochs) written by aggregate.py.

    python paper_figures/fig1_flops_vs_accuracy.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "fig1_flops_vs_accuracy"
POINTS_PER_PANEL = 16  # what a 6 x 4.6 inch panel labels without crowding


def draw(tables: Path):
    main = common.read_table(tables, "main")
    if main.empty:
        return None
    styles = common.method_styles(main["method"])
    panels = common.blocks(main)
    # a crowded panel (the paper grid has ~30 points per panel) grows, so that every point's label finds a free place
    scale = max(1.0, (main.groupby(["dataset", "arch"]).size().max() / POINTS_PER_PANEL) ** 0.5)
    fig, axes = common.panel_grid(len(panels), ncols=2, size=(6.0 * scale, 4.6 * scale))
    for ax, (dataset, arch) in zip(axes, panels):
        block = main[(main["dataset"] == dataset) & (main["arch"] == arch)]
        for method, rows in block.groupby("method", sort=False):
            rows = rows.sort_values("density")
            ensemble = common.is_ensemble(method)
            ax.errorbar(rows["train_flops_mean"], rows["acc_pct_mean"], xerr=common.zero_nan(rows["train_flops_std"]),
                        yerr=common.zero_nan(rows["acc_pct_std"]), label=method, linestyle=":" if ensemble else "-",
                        linewidth=0.8, markersize=6, capsize=2, fillstyle="none" if ensemble else "full",
                        **styles[method])
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.15)  # room for the labels of the outermost points
        common.log_axis(ax, "x")
        ax.set_xlabel(f"training FLOPs ({common.FLOPS_UNIT})")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset} / {arch}")
        ax.grid(alpha=0.3, which="both")
    common.figure_legend(fig, axes, ncol=4)
    fig.suptitle(f"Training cost vs accuracy (mean ± std over seeds, {common.seeds_text(main['n'])}; "
                 "d = density, ensembles: members' summed density, hollow markers)")
    common.freeze_layout(fig)
    for ax, (dataset, arch) in zip(axes, panels):  # after the layout: placement works in display coordinates
        block = main[(main["dataset"] == dataset) & (main["arch"] == arch)]
        common.label_points(ax, block["train_flops_mean"], block["acc_pct_mean"],
                            [f"d = {d:g}" for d in block["density"]])
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
