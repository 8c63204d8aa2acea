"""OOD detection: AUROC against density for every method (default recipe), one row of panels per
dataset x architecture x OOD set and one column per score: maximum softmax probability (max_prob) and
negative mutual information (neg_mutual_info, the epistemic score); both score higher = more
in-distribution. Dense VI (density 1) is a dashed line with its seed-std band; the dotted grey line is
chance (AUROC 0.5). Every other method is drawn at each density it ran, side by side where several share one;
ensembles at their members' summed density (hollow). Error bars = std over seeds. neg_entropy, AUPR and FPR95 are in table ``ood``.
Reads ``ood.csv`` written by aggregate.py.

    python paper_figures/ood_auroc_vs_density.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "ood_auroc_vs_density"
SCORES = {"max_prob": "max softmax prob.", "neg_mutual_info": "neg. mutual information"}


def draw(tables: Path):
    ood = common.read_table(tables, "ood")
    if ood.empty:
        return None
    ood = ood[ood["score"].isin(list(SCORES))]
    scores = [s for s in SCORES if s in set(ood["score"])]
    if ood.empty or ood["auroc_mean"].isna().all():
        return None
    styles = common.method_styles(ood["method"])
    panels = [(d, a, s, score) for d, a, s in common.blocks(ood, ("dataset", "arch", "ood_set")) for score in scores]
    fig, axes = common.panel_grid(len(panels), ncols=len(scores), size=(4.4, 3.3))
    for ax, (dataset, arch, ood_set, score) in zip(axes, panels):
        rows = ood[(ood["dataset"] == dataset) & (ood["arch"] == arch) & (ood["ood_set"] == ood_set)
                   & (ood["score"] == score)]
        common.against_density(ax, rows, styles, "auroc_mean", "auroc_std")
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (AUROC 0.5)")
        ax.set_ylabel("AUROC")
        ax.set_title(f"{dataset} / {arch} vs {ood_set}\nscore: {SCORES[score]} ({score})", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    common.figure_legend(fig, axes, ncol=5)
    n = common.seeds_text(ood["n"][ood["n"] > 0])
    fig.suptitle(f"OOD detection AUROC vs density (mean ± std over seeds, {n}; "
                 "dashed: dense VI; higher score = more in-distribution)", fontsize=10)
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
