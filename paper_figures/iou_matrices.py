"""Overlap between removal criteria (the paper's Table 4 as heat-maps): IoU of the removed weight sets
(top row) and Spearman rank correlation of the scores (bottom row) at the first, middle and last subspace
update, averaged over the SSVI runs of the criteria ablation. Reads ``iou_{start,middle,end}.csv`` and
``spearman_{start,middle,end}.csv`` written by aggregate.py.

    python paper_figures/iou_matrices.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "iou_matrices"
STAGES = ("start", "middle", "end")
KINDS = {"iou": ("IoU", 0.0, 1.0, "viridis"), "spearman": ("Spearman", -1.0, 1.0, "coolwarm")}


def draw(tables: Path):
    mats = {(kind, stage): common.read_table(tables, f"{kind}_{stage}") for kind in KINDS for stage in STAGES}
    if all(m.empty or len(m.columns) < 2 for m in mats.values()):
        return None
    fig, axes = common.panel_grid(len(mats), ncols=len(STAGES), size=(4.4, 4.0))
    for ax, ((kind, stage), mat) in zip(axes, mats.items()):
        label, vmin, vmax, cmap = KINDS[kind]
        ax.set_title(f"{label}, {stage}")
        if mat.empty or len(mat.columns) < 2:
            ax.text(0.5, 0.5, common.EMPTY_MESSAGE, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        names = list(mat["criterion"])
        values = mat.set_index("criterion")[names].to_numpy(dtype=float)
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if kind == "iou" and values[i, j] < 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.75)
    runs = common.read_table(tables, "criteria_vs_mean")
    n = f", n = {int(runs['n'].max())} runs" if not runs.empty else ""
    fig.suptitle(f"Criteria overlap at the start, middle and end of the update phase (mean over runs{n})")
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
