"""Hyperparameter robustness: test-accuracy heat-maps over sigma_init (rows) x KL scale (columns), one
panel per method (dense VI, SSVI), shared colour scale; each cell shows mean ± std over seeds.
Reads ``robustness.csv`` written by aggregate.py.

    python paper_figures/robustness_heatmap.py --tables results/tables --out results/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "robustness_heatmap"


def draw(tables: Path):
    rob = common.read_table(tables, "robustness")
    if rob.empty:
        return None
    sigmas, kls = sorted(rob["sigma_init"].unique()), sorted(rob["kl_scale"].unique())
    methods = list(dict.fromkeys(rob["method"]))
    vmin, vmax = rob["acc_pct_mean"].min(), rob["acc_pct_mean"].max()
    size = (1.3 * len(kls) + 2.2, 1.0 * len(sigmas) + 1.6)
    fig, axes = common.panel_grid(len(methods), ncols=len(methods), size=size, layout="constrained")
    for ax, method in zip(axes, methods):
        cells = rob[rob["method"] == method]
        mean, std = (cells.pivot(index="sigma_init", columns="kl_scale", values=f"acc_pct_{x}")
                     .reindex(index=sigmas, columns=kls) for x in ("mean", "std"))
        image = ax.imshow(mean.to_numpy(dtype=float), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(sigmas)):
            for j in range(len(kls)):
                m, s = mean.iat[i, j], std.iat[i, j]
                if np.isnan(m):
                    text = "no run"
                else:
                    text = f"{m:.1f}" + ("" if np.isnan(s) else f"\n± {s:.1f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if np.isnan(m) or m < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(kls)), [f"{k:g}" for k in kls])
        ax.set_yticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
        ax.set_xlabel("KL scale")
        ax.set_ylabel("σ-init")
        ax.set_title(method)
    fig.colorbar(image, ax=axes, label="test accuracy (%)", shrink=0.9)
    fig.suptitle(f"Accuracy over the hyperparameter grid (mean ± std over seeds, {common.seeds_text(rob['n'])})")
    return fig


def main(argv=None) -> int:
    return common.main(NAME, __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
