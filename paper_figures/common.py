"""Helpers shared by the figure scripts: the command line, reading the aggregator's CSV tables, panel
grids (constrained layout, one legend outside the panels), method styles, panels by density for figures that
grow with the methods, points dodged at a shared density, point labels placed clear of every marker, error bar
and line, the empty-figure case and saving PNG + PDF.

Every figure script is ``python paper_figures/<name>.py --tables results/tables --out results/figures``
and reads only the CSV tables written by ``workflow/scripts/aggregate.py``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the ssvi package, when not installed
from ssvi.report.render import report_caption  # noqa: E402

EMPTY_MESSAGE = "no runs for this figure"
DENSE = "dense_vi"  # the reference drawn in every panel of a density-grouped figure
PER_PANEL = 5       # methods per panel of a density-grouped figure, besides the reference (more: another panel)
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
    """A figure with ``n`` panels in rows of ``ncols`` (constrained layout: titles, labels and the legend never
    overlap or leave the figure); unused axes are removed. Returns (fig, axes list)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    kwargs.setdefault("layout", "constrained")
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kwargs)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


@dataclass
class Panel:
    """One panel of a density-grouped figure: its block (dataset, arch), title and (method, density) cells."""
    block: tuple
    title: str
    cells: list = field(default_factory=list)


def density_panels(frame: pd.DataFrame, block: tuple, per_panel: int = PER_PANEL) -> list[Panel]:
    """The panels of one block (dataset, arch) of a figure drawn per density: one per density the block's methods
    ran at (descending; ensembles at their members' summed density), then one for the other dense cells (density
    >= 1: a method's dense variants, dense ensembles); at most ``per_panel`` methods each (more: a second panel of
    that density). Dense VI is the reference every panel draws, never a panel's only content, unless it is the
    block's only method."""
    cells = list(dict.fromkeys(zip(frame["method"], frame["density"])))
    others = [cell for cell in cells if cell[0] != DENSE]
    if not others:
        return [Panel(block, f"{DENSE}, d = 1", cells)]
    densities = sorted({d for _, d in others if d < 1}, reverse=True)
    groups = [(f"d = {d:g}", [c for c in others if c[1] == d]) for d in densities]
    dense = [c for c in others if c[1] >= 1]
    if dense:
        groups.append(("d ≥ 1 (dense)", dense))
    panels = []
    for title, group in groups:
        size = math.ceil(len(group) / math.ceil(len(group) / per_panel))  # balanced: 7 methods -> 4 + 3
        chunks = [group[i:i + size] for i in range(0, len(group), size)]
        panels += [Panel(block, title + (f" ({k} of {len(chunks)})" if len(chunks) > 1 else ""), chunk)
                   for k, chunk in enumerate(chunks, 1)]
    return panels


def block_layout(panels: list[Panel], ncols: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(rows, columns, (row, column) of each panel): every block starts a new row, at most ``ncols`` panels a row."""
    ncols = max(1, min(ncols, max(sum(p.block == b for p in panels) for b in {p.block for p in panels})))
    positions, row, column, previous = [], -1, ncols, None
    for panel in panels:
        if panel.block != previous or column == ncols:
            row, column = row + 1, 0
        positions.append((row, column))
        column, previous = column + 1, panel.block
    return row + 1, ncols, positions


def cell_rows(frame: pd.DataFrame, method: str, density: float) -> pd.DataFrame:
    """The rows of one (method, density) cell."""
    return frame[(frame["method"] == method) & ((frame["density"] - density).abs() < 1e-9)]


def is_ensemble(method: str) -> bool:
    """Ensemble rows are labelled '<method> ×M (d <density> each)' (ssvi.report.ensembles)."""
    return " ×" in method


def dodged(rows: pd.DataFrame, method: str, spread: float = 0.12) -> list[float]:
    """x positions of ``method``'s points among ``rows`` (columns method, density) on a log axis: at a density
    several methods share, side by side around it (0.02 decades apart, at most ``spread`` decades for all), so their
    markers and error bars do not cover each other; a density of its own stays in place (the ticks are the true
    densities)."""
    positions = []
    for density in rows.loc[rows["method"] == method, "density"].sort_values():
        sharing = list(dict.fromkeys(rows.loc[(rows["density"] - density).abs() < 1e-9, "method"]))
        step = min(0.02, spread / max(len(sharing) - 1, 1))
        positions.append(float(density) * 10 ** (step * (sharing.index(method) - (len(sharing) - 1) / 2)))
    return positions


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


DENSITY_LABEL = "density (ensembles: members' sum)"


def against_density(ax, rows: pd.DataFrame, styles: dict, mean: str, std: str) -> None:
    """Every method of ``rows`` (columns method, density, ``mean``, ``std``) against density on one continuous log
    axis: dense VI as a dashed reference line with its seed-std band; every other method (its dense variants and
    ensembles too, at their budget; ensembles hollow and dotted) as points with error bars, dodged side by side
    where several share a density; a dotted vertical line at d = 1 when a point lies at or beyond it."""
    methods = [m for m in dict.fromkeys(rows["method"]) if m != DENSE]
    dense = rows[rows["method"] == DENSE]
    if not dense.empty:
        level, spread = dense[mean].iloc[0], zero_nan(dense[std]).iloc[0]
        ax.axhline(level, color=styles[DENSE]["color"], linestyle="--", label=DENSE)
        ax.axhspan(level - spread, level + spread, color=styles[DENSE]["color"], alpha=0.15)
    points = rows[rows["method"] != DENSE]
    for method in methods:
        cells = rows[rows["method"] == method].sort_values("density")
        ensemble = is_ensemble(method)
        ax.errorbar(dodged(points, method), cells[mean], yerr=zero_nan(cells[std]),
                    label=method, capsize=2, markersize=5, linewidth=1, linestyle=":" if ensemble else "-",
                    fillstyle="none" if ensemble else "full", **styles[method])
    points = points["density"] if methods else rows["density"]
    if (points >= 1).any():  # the dense boundary: points right of it hold more weights than one dense network
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=0.8)
        points = pd.concat([points, pd.Series([1.0])])
    density_axis(ax, points, DENSITY_LABEL)
    ax.margins(x=0.12)


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


# where a label goes around its point, in order of preference: (horizontal, vertical) with -1 = before the point
# (left / below), 0 = centred on it, 1 = after it (right / above); diagonals are pulled in by 0.7
LABEL_DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
LABEL_DISTANCES = [4, 9, 16, 26, 40, 56]  # points from the point; beyond the first two a thin leader line is drawn


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def obstacles(ax) -> list[tuple]:
    """Display boxes of everything drawn in ``ax`` that a label must not cover: markers (with a margin), error
    bars and line segments (sampled every few pixels)."""
    boxes = []
    for line in ax.get_lines():
        points = line.get_transform().transform(line.get_xydata())
        if line.get_marker() not in (None, "None", "", " "):
            r = line.get_markersize() * ax.figure.dpi / 72 / 2 + 2
            boxes += [(x - r, y - r, x + r, y + r) for x, y in points]
        if line.get_linestyle() not in ("None", "", " ") and len(points) > 1:
            boxes += _segment_boxes(points)
    for collection in ax.collections:  # error bars (LineCollections)
        for path in collection.get_paths():
            boxes += _segment_boxes(collection.get_transform().transform(path.vertices))
    return boxes


def _segment_boxes(points, spacing: float = 4.0) -> list[tuple]:
    boxes = []
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        steps = max(1, int(math.hypot(x1 - x0, y1 - y0) / spacing))
        for k in range(steps + 1):
            x, y = x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps
            boxes.append((x - 1.5, y - 1.5, x + 1.5, y + 1.5))
    return boxes


def label_points(ax, xs, ys, texts, fontsize: float = 7) -> None:
    """Annotate points so that no label covers a marker, an error bar, a line or another label, and none leaves
    the panel: each label takes the nearest free place around its point (8 directions, growing distances; from
    the third distance on with a thin leader line). Call after the figure's layout is final (``freeze_layout``)."""
    fig = ax.figure
    fig.canvas.draw()  # text extents and the final transforms
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    inside = (frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2)
    taken = obstacles(ax)
    scale = fig.dpi / 72
    for x, y, text in zip(xs, ys, texts):
        px, py = ax.transData.transform((x, y))
        probe = ax.text(0, 0, text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        width, height = extent.width + 4, extent.height + 4  # 2 pixels of room on every side
        best = None
        for distance in LABEL_DISTANCES:
            for dx, dy in LABEL_DIRECTIONS:
                reach = distance * scale * (0.7 if dx and dy else 1.0)
                left = px + reach if dx > 0 else px - reach - width if dx < 0 else px - width / 2
                bottom = py + reach if dy > 0 else py - reach - height if dy < 0 else py - height / 2
                box = (left, bottom, left + width, bottom + height)
                if inside[0] <= box[0] and box[2] <= inside[2] and inside[1] <= box[1] and box[3] <= inside[3] \
                        and not any(_overlaps(box, other) for other in taken):
                    best = (box, distance)
                    break
            if best:
                break
        if best is None:  # no free place within reach: leave the point unlabelled rather than cover something
            continue
        box, distance = best
        taken.append(box)
        anchor = ax.transData.inverted().transform((box[0] + 2, box[1] + 2))
        leader = {}
        if distance > LABEL_DISTANCES[1]:  # a leader line from the label to its point; later labels keep off it
            leader = {"arrowprops": {"arrowstyle": "-", "color": "grey", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3}}
            nearest = (min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3]))
            taken += _segment_boxes([(px, py), nearest])
        note = ax.annotate(text, (x, y), xytext=anchor, textcoords="data", fontsize=fontsize, ha="left", va="bottom",
                           annotation_clip=False, **leader)
        note.set_in_layout(False)


def freeze_layout(fig) -> None:
    """Run the constrained layout once and keep it, so labels placed in display coordinates stay where placed."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def figure_legend(fig, axes, ncol: int = 4) -> None:
    """One legend below the panels (outside them: the constrained layout makes room) with every label of every
    panel, in first-seen order."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), ncol),
                   frameon=False, fontsize=9)


def seeds_text(ns) -> str:
    """'n = 3 seeds' or 'n = 1–3 seeds' from a column of per-cell seed counts."""
    ns = [int(n) for n in ns]
    if not ns:
        return "n = 0"
    low, high = min(ns), max(ns)
    return f"n = {low} seed{'s' if high > 1 else ''}" if low == high else f"n = {low}–{high} seeds"


def empty_figure(title: str, message: str = EMPTY_MESSAGE):
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, transform=ax.transAxes)
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def figure_caption(doc: str, fig) -> str:
    """The figure's caption for the HTML report: its script's description (the docstring before the command line)
    and the figure's own title (what it shows, n), or that it has no runs."""
    description = re.split(r"\n\s*python paper_figures/", doc)[0].replace("``", "")
    title = fig._suptitle.get_text() if fig._suptitle is not None else f"{EMPTY_MESSAGE} (its tables have no rows)"
    return f"{' '.join(description.split())} This figure: {' '.join(title.split())}."


def save(fig, out: Path, name: str, caption: str = "") -> list[Path]:
    """PNG, PDF and the caption the HTML report shows (``<name>.caption.rst``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.caption.rst"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    paths[2].write_text(report_caption(caption or name))
    plt.close(fig)
    return paths


def main(name: str, doc: str, draw: Callable[[Path], object], argv=None) -> int:
    """The command line of every figure script: draw from ``--tables`` (None = nothing to plot), save with its
    caption."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tables", type=Path, default=Path("results/tables"), help="aggregate.py's output folder")
    parser.add_argument("--out", type=Path, default=Path("results/figures"), help="where to write PNG and PDF")
    args = parser.parse_args(argv)
    fig = draw(args.tables)
    if fig is None:
        fig = empty_figure(name)
    for path in save(fig, args.out, name, figure_caption(doc, fig)):
        print(f"wrote {path}")
    return 0
