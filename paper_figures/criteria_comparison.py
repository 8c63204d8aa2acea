"""Criteria ablation: SSVI accuracy, NLL and top-label ECE per removal criterion at the ablation's
density (bars = seed mean, error bars = std over seeds; the default criterion is hatched). The accuracy
axis does not start at 0 (its limits say where it starts). Reads ``criteria.csv`` written by aggregate.py.

    python paper_figures/criteria_comparison.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "criteria_comparison"
METRICS = ["acc_pct", "nll", "ece"]


def draw(tables: Path):
    crit = common.read_table(tables, "criteria")
    if crit.empty:
        return None
    fig, axes = common.panel_grid(len(METRICS), ncols=len(METRICS), size=(4.2, 3.6))
    x = range(len(crit))
    for ax, metric in zip(axes, METRICS):
        mean, std = crit[f"{metric}_mean"], common.zero_nan(crit[f"{metric}_std"])
        bars = ax.bar(x, mean, yerr=std, capsize=3, color="tab:blue", alpha=0.8)
        for bar, is_default in zip(bars, crit["default"]):
            if is_default:
                bar.set_hatch("//")
        if metric == "acc_pct":
            low, high = (mean - std).min(), (mean + std).max()
            pad = max(1.0, 0.25 * (high - low))
            ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
        ax.set_xticks(list(x), crit["criterion"], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel(common.METRIC_LABELS[metric])
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Removal criteria (SSVI; hatched = default; {common.seeds_text(crit['n'])}; mean ± std)")
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
