"""Subspace-schedule ablation (the paper's Figure 3, "updating φ"): SSVI test accuracy and NLL against ΔT
(training steps between subspace updates, log scale), one line per α (initial removal fraction), at the
ablation's dataset, arch and density; error bars = std over seeds, n in the title, the recipe's default
(ΔT, α) ringed. Reads ``schedule_ablation.csv`` written by aggregate.py.

    python paper_figures/schedule_ablation.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "schedule_ablation"
METRICS = ["acc_pct", "nll"]


def draw(tables: Path):
    table = common.read_table(tables, NAME)
    if table.empty:
        return None
    styles = common.method_styles(f"α = {a:g}" for a in sorted(table["alpha"].unique()))
    fig, axes = common.panel_grid(len(METRICS), ncols=len(METRICS), size=(4.4, 3.4))
    for ax, metric in zip(axes, METRICS):
        for alpha, rows in table.groupby("alpha", sort=True):
            rows = rows.sort_values("delta_t")
            label = f"α = {alpha:g}"
            ax.errorbar(rows["delta_t"], rows[f"{metric}_mean"], yerr=common.zero_nan(rows[f"{metric}_std"]),
                        label=label, capsize=3, markersize=5, linewidth=1, **styles[label])
            default = rows[rows["default"].astype(bool)]
            ax.scatter(default["delta_t"], default[f"{metric}_mean"], s=160, facecolors="none", edgecolors="black",
                       linewidths=1, zorder=5, label="recipe default" if not default.empty else None)
        ax.margins(x=0.1)
        common.density_axis(ax, table["delta_t"], "ΔT (steps between subspace updates)")
        ax.set_ylabel(common.METRIC_LABELS[metric])
        ax.grid(alpha=0.3, which="both")
    common.figure_legend(fig, axes, ncol=5)
    fig.suptitle(f"SSVI subspace schedule (mean ± std over seeds, {common.seeds_text(table['n'])})")
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
