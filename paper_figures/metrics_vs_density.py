"""Accuracy, NLL and both ECE variants against density for every method (default recipe), one row of
panels per dataset x architecture; dense VI (density 1) is drawn as a dashed line with its seed-std band.
Every other method is drawn at each density it ran, side by side where several share one (the ticks are the true
densities); a method's dense variants sit at d = 1 and ensembles at their members' summed density (hollow,
dotted), on the same continuous log axis. Error bars = std over seeds. Reads ``density_sweep.csv`` written by
aggregate.py.

    python paper_figures/metrics_vs_density.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "metrics_vs_density"
METRICS = ["acc_pct", "nll", "ece", "ece_ssvi"]


def draw(tables: Path):
    sweep = common.read_table(tables, "density_sweep")
    if sweep.empty:
        return None
    styles = common.method_styles(sweep["method"])
    panels = [(d, a, m) for d, a in common.blocks(sweep) for m in METRICS]
    fig, axes = common.panel_grid(len(panels), ncols=len(METRICS), size=(3.8, 3.0))
    for ax, (dataset, arch, metric) in zip(axes, panels):
        rows = sweep[(sweep["dataset"] == dataset) & (sweep["arch"] == arch) & (sweep["metric"] == metric)]
        common.against_density(ax, rows, styles, "mean", "std")
        ax.set_ylabel(common.METRIC_LABELS[metric])
        ax.set_title(f"{dataset} / {arch}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    common.figure_legend(fig, axes, ncol=5)
    fig.suptitle(f"Metrics vs density (mean ± std over seeds, {common.seeds_text(sweep['n'])}; dashed: dense VI; "
                 "hollow: ensembles)")
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
