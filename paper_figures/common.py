"""Helpers shared by the figure scripts: the command line, reading the aggregator's CSV tables, panel
grids, method styles, the empty-figure case and saving PNG + PDF.

Every figure script is ``python paper_figures/<name>.py --tables results/tables --out results/figures``
and reads only the CSV tables written by ``workflow/scripts/aggregate.py``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

EMPTY_MESSAGE = "no runs for this figure"
MARKERS = "osD^v<>pP*hX"
METRIC_LABELS = {"acc_pct": "accuracy (%)", "nll": "NLL", "ece": "ECE (top-label L1, 15 bins)",
                 "ece_ssvi": "ECE (authors')", "brier": "Brier", "train_flops": "training FLOPs",
                 "test_flops": "test FLOPs"}
FLOPS_UNIT = "FLOPs, 2 per multiply-add"


def read_table(tables: Path, name: str) -> pd.DataFrame:
    """``<tables>/<name>.csv``; an empty frame if the file is missing or has no rows."""
    path = Path(tables) / f"{name}.csv"
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def panel_grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.3), **kwargs):
    """A figure with ``n`` panels in rows of ``ncols``; unused axes are hidden. Returns (fig, axes list)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kwargs)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def method_styles(methods) -> dict[str, dict]:
    """A stable colour and marker per method label (dense VI first, in the order given)."""
    colors = plt.get_cmap("tab10").colors
    return {m: {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
            for i, m in enumerate(dict.fromkeys(methods))}


def blocks(frame: pd.DataFrame, keys=("dataset", "arch")) -> list[tuple]:
    """The distinct (dataset, arch) pairs in table order."""
    return list(dict.fromkeys(zip(*(frame[k] for k in keys))))


def zero_nan(series: pd.Series) -> pd.Series:
    """Error bars: std is empty where n = 1; draw none."""
    return series.fillna(0.0)


def density_axis(ax, densities, label: str = "density") -> None:
    """Log-scale x axis with one labelled tick per value present (no minor-tick clutter)."""
    ticks = sorted({float(d) for d in densities})
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [f"{d:g}" for d in ticks])
    ax.set_xlabel(label)


def power_of_ten(value: float, _position=None) -> str:
    """Tick label 'm×10^k' (mathtext); '10^k' for m = 1."""
    if value <= 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10 ** exponent, 6)
    return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa:g}\\times10^{{{exponent}}}$"


def log_ticks(low: float, high: float, at_most: int = 5) -> list[float]:
    """Round log-axis ticks in [low, high]: 1/2/5 × 10^k, else every m × 10^k, thinned to ``at_most``."""
    exponents = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
    for mantissas in ((1,), (1, 2, 5), range(1, 10)):
        ticks = [m * 10.0 ** e for e in exponents for m in mantissas if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 2 or (mantissas == range(1, 10) and ticks):
            break
    step = math.ceil(len(ticks) / at_most) if ticks else 1
    return ticks[::step] or [low, high]


def log_axis(ax, axis: str = "x") -> None:
    """Log scale with a few round, labelled ticks and unlabelled minor ticks (no colliding minor labels such
    as 3×10^9, 4×10^9, 6×10^9 on a narrow range). Call after plotting (it reads the data limits)."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    target.set_major_locator(matplotlib.ticker.FixedLocator(log_ticks(low, high)))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(power_of_ten))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


LABEL_OFFSETS = [(5, 4), (5, -11), (-5, 4), (-5, -11), (5, 14), (5, -21), (-5, 14), (-5, -21)]  # points


def label_points(ax, xs, ys, texts, fontsize: float = 7) -> None:
    """Annotate points without overlapping labels: each label takes the first offset (right/left, above/
    below) whose box misses every label placed before it and every point. Call after the final layout."""
    fig = ax.figure
    scale = fig.dpi / 72  # points -> pixels
    points = ax.transData.transform(list(zip(xs, ys)))
    boxes = [(px - 3 * scale, py - 3 * scale, px + 3 * scale, py + 3 * scale) for px, py in points]
    for (px, py), (x, y), text in zip(points, zip(xs, ys), texts):
        width, height = 0.6 * fontsize * len(text) * scale, 1.2 * fontsize * scale
        for dx, dy in LABEL_OFFSETS:
            left = px + dx * scale if dx > 0 else px + dx * scale - width
            box = (left, py + dy * scale, left + width, py + dy * scale + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                break
        boxes.append(box)
        ax.annotate(text, (x, y), fontsize=fontsize, textcoords="offset points", xytext=(dx, dy),
                    ha="left" if dx > 0 else "right", va="bottom")


def figure_legend(fig, axes, ncol: int = 4) -> int:
    """One legend below the panels with every label of every panel; returns the number of rows it takes."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=min(len(entries), ncol),
                   frameon=False)
    return math.ceil(len(entries) / ncol)


def seeds_text(ns) -> str:
    """'n = 3 seeds' or 'n = 1–3 seeds' from a column of per-cell seed counts."""
    ns = [int(n) for n in ns]
    if not ns:
        return "n = 0"
    low, high = min(ns), max(ns)
    return f"n = {low} seed{'s' if high > 1 else ''}" if low == high else f"n = {low}–{high} seeds"


def empty_figure(title: str, message: str = EMPTY_MESSAGE):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, transform=ax.transAxes)
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def save(fig, out: Path, name: str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def main(name: str, doc: str, draw: Callable[[Path], object], argv=None) -> int:
    """The command line of every figure script: draw from ``--tables`` (None = nothing to plot), save."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tables", type=Path, default=Path("results/tables"), help="aggregate.py's output folder")
    parser.add_argument("--out", type=Path, default=Path("results/figures"), help="where to write PNG and PDF")
    args = parser.parse_args(argv)
    fig = draw(args.tables)
    if fig is None:
        fig = empty_figure(name)
    for path in save(fig, args.out, name):
        print(f"wrote {path}")
    return 0
