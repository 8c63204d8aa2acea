"""Risk–coverage curves (selective prediction): the error rate of the most confident fraction of the test set
against that fraction, one panel per dataset x architecture, one line per method at the main density (config
``main_density``; ensembles whose members' densities add up to it) and dense VI; the band is the std over
seeds. A curve that stays low while coverage grows ranks its errors last: its confidence knows what it does
not know. The areas under the curves are the AURC column of table ``main``. Reads ``risk_coverage.csv``
written by aggregate.py.

    python paper_figures/risk_coverage.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "risk_coverage"


def draw(tables: Path):
    data = common.read_table(tables, "risk_coverage")
    if data.empty:
        return None
    styles = common.method_styles(data["method"])
    blocks = common.blocks(data)
    fig, axes = common.panel_grid(len(blocks), ncols=2, size=(5.6, 4.2))
    for ax, (dataset, arch) in zip(axes, blocks):
        block = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        for (method, density), rows in block.groupby(["method", "density"], sort=False):
            rows = rows.sort_values("coverage")
            color = styles[method]["color"]
            label = f"{method} (d {density:g})"
            ax.plot(rows["coverage"], 100 * rows["risk_mean"], color=color, linewidth=1.3, label=label,
                    linestyle="--" if method == "dense_vi" else "-")
            spread = 100 * common.zero_nan(rows["risk_std"])
            ax.fill_between(rows["coverage"], 100 * rows["risk_mean"] - spread, 100 * rows["risk_mean"] + spread,
                            color=color, alpha=0.15, linewidth=0)
        ax.set_xlim(0, 1)
        # symlog: a chance-level method (post-hoc without fine-tuning) would squash every other curve near 0
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 0.5, 1, 2, 5, 10, 20, 50, 100], ["0", "0.5", "1", "2", "5", "10", "20", "50", "100"])
        ax.set_xlabel("coverage (fraction of test points answered, most confident first)")
        ax.set_ylabel("risk: error rate of the answered (%, symlog)")
        ax.set_title(f"{dataset} / {arch} ({common.seeds_text(block['n'])})", fontsize=9)
        ax.grid(alpha=0.3)
    legend_rows = common.figure_legend(fig, axes, ncol=3)
    fig.suptitle(f"Risk–coverage at the main density (mean ± std over seeds, {common.seeds_text(data['n'])}; "
                 "dashed: dense VI; y linear below 1%, logarithmic above)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * legend_rows / max(1, len(axes) // 2) ** 0.5 + 0.02, 1, 1))
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
