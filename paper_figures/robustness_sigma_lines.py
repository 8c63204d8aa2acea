"""Robustness to σ-init (the paper's Figure 2 panel): test accuracy against σ-init (log scale) for dense VI
and SSVI, one line per KL scale (colour) and method (solid: SSVI, dashed: dense VI); error bars = std over
seeds, n in the title. The same grid as the heat-map robustness_heatmap. Reads ``robustness.csv`` written
by aggregate.py.

    python paper_figures/robustness_sigma_lines.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "robustness_sigma_lines"
LINESTYLES = {"ssvi": "-", "dense_vi": "--"}


def draw(tables: Path):
    rob = common.read_table(tables, "robustness")
    if rob.empty:
        return None
    colors = common.method_styles(f"{k:g}" for k in sorted(rob["kl_scale"].unique()))
    fig, axes = common.panel_grid(1, ncols=1, size=(5.6, 4.0))
    ax = axes[0]
    for (method, kl), rows in rob.groupby(["method", "kl_scale"], sort=False):
        rows = rows.sort_values("sigma_init")
        style = colors[f"{kl:g}"]
        ax.errorbar(rows["sigma_init"], rows["acc_pct_mean"], yerr=common.zero_nan(rows["acc_pct_std"]),
                    label=f"{method}, KL scale {kl:g}", linestyle=LINESTYLES.get(method, ":"), capsize=3,
                    markersize=5, linewidth=1.2, color=style["color"],
                    marker="o" if method == "ssvi" else "s", fillstyle="full" if method == "ssvi" else "none")
    ax.set_xscale("log")
    ax.margins(x=0.1)
    common.log_axis(ax, "x")
    ax.set_xlabel("σ-init")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    common.figure_legend(fig, axes, ncol=2)
    fig.suptitle(f"Accuracy vs σ-init (mean ± std over seeds, {common.seeds_text(rob['n'])}; dashed: dense VI)",
                 fontsize=10)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
