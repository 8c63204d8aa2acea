"""Rendering: display cells, captions and the three files of every table.

Takes a ``Table`` (``data``: the numbers, a plain DataFrame, written as CSV; ``display``: the formatted
cells; ``caption``); gives ``<name>.csv``, ``<name>.md`` (one sub-table per ``blocks`` value) and
``<name>.tex`` (each written atomically). The helpers ``pm``, ``pm_columns``, ``n_cell`` and ``caption`` make
the display cells and captions the table builders use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..files import write_text
from .columns import ECE_NOTE, FLOPS_NOTE, FORMATS, LABELS, STD_NOTE
from .stats import EXACT_METRICS


@dataclass
class Table:
    name: str
    data: pd.DataFrame                               # numbers -> <name>.csv
    display: pd.DataFrame                            # formatted cells -> <name>.md, <name>.tex
    caption: str
    blocks: list[str] = field(default_factory=list)  # Markdown: one sub-table per value of these columns
    prune_blocks: bool = False                       # Markdown: drop a block's columns that are all "—"


def pm(mean, std, fmt: str, low=None, high=None) -> str:
    """'mean ± std [low, high]' (the interval when given); '—' for a missing std (n = 1) or mean."""
    if pd.isna(mean):
        return "—"
    interval = "" if low is None or pd.isna(low) else f" [{low:{fmt}}, {high:{fmt}}]"
    return f"{mean:{fmt}} ± {'—' if pd.isna(std) else format(std, fmt)}{interval}"


def pm_columns(stats: pd.DataFrame, metrics: list[str]) -> dict[str, list[str]]:
    """Per metric the 'mean ± std [95% interval]' cells of a seed_stats frame (counts such as FLOPs: no interval)."""
    def cells(m):
        lows = stats[f"{m}_ci_low"] if f"{m}_ci_low" in stats and m not in EXACT_METRICS else [None] * len(stats)
        highs = stats[f"{m}_ci_high"] if f"{m}_ci_high" in stats and m not in EXACT_METRICS else [None] * len(stats)
        return [pm(a, b, FORMATS[m], lo, hi) for a, b, lo, hi in zip(stats[f"{m}_mean"], stats[f"{m}_std"], lows, highs)]
    return {LABELS[m]: cells(m) for m in metrics}


def n_cell(n, n_stale=0) -> str:
    """The n column's cell: '3', or '3 (1 stale)' when stale runs were included (--allow-stale)."""
    return f"{int(n)}" + (f" ({int(n_stale)} stale)" if n_stale and not pd.isna(n_stale) else "")


def n_cells(stats: pd.DataFrame) -> list[str]:
    return [n_cell(n, s) for n, s in zip(stats["n"], stats.get("n_stale", [0] * len(stats)))]


def density_cell(density) -> str:
    return f"{density:g}"


def seeds_note(ns, unit: str = "seed", n_column: bool = True) -> str:
    ns = [int(n) for n in ns if not pd.isna(n)]
    if not ns:
        return "no runs"
    low, high = min(ns), max(ns)
    return f"n = {low} {unit}{'s' if low > 1 else ''} per cell" if low == high else \
        f"n = {low}–{high} {unit}s per cell" + (" (column n)" if n_column else "")


def caption(text: str, ns, spread: str = STD_NOTE, unit: str = "seed", n_column: bool = True) -> str:
    """Table caption: what it shows, how cells are summarised, n (``n_column``: the table has an n column), the ECE
    variants and the FLOPs unit."""
    return f"{text}. {spread}; {seeds_note(ns, unit, n_column)}. {ECE_NOTE}. {FLOPS_NOTE}."


TEX_SUBSTITUTIONS = {"±": r"$\pm$", "×": r"$\times$", "÷": r"$\div$", "−": "$-$", "—": "---", "–": "--",
                     "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "∈": r"$\in$", "μ": r"$\mu$",
                     "σ": r"$\sigma$", "θ": r"$\theta$", "Δ": r"$\Delta$", "α": r"$\alpha$", "φ": r"$\phi$",
                     "·": r"$\cdot$",
                     "|": r"\textbar{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (captions)."""
    text = text.replace("\\", "\0")
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    text = text.replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    return text.replace("\0", r"\textbackslash{}")


def to_latex(table: Table) -> str:
    display = table.display.astype(str) if not table.display.empty else table.display
    body = display.to_latex(index=False, escape=True, caption=tex_escape(table.caption),
                            label=f"tab:{table.name.replace('_', '-')}")
    for char, repl in TEX_SUBSTITUTIONS.items():
        body = body.replace(char, repl)
    return body


def to_markdown(table: Table) -> str:
    def md(frame: pd.DataFrame) -> str:
        cells = frame.map(lambda v: str(v).replace("|", "\\|")).rename(columns=lambda c: str(c).replace("|", "\\|"))
        return cells.to_markdown(index=False, disable_numparse=True)

    parts = [f"**{table.name}** — {table.caption}", ""]
    if table.display.empty:
        parts += ["_No runs for this table._", ""]
    if table.blocks and not table.display.empty:
        for key, block in table.display.groupby(table.blocks, sort=False):
            block = block.drop(columns=table.blocks)
            if table.prune_blocks:
                block = block.loc[:, ~block.astype(str).eq("—").all()]
            parts += [f"### {' / '.join(map(str, key))}", "", md(block), ""]
    else:
        parts += [md(table.display), ""]
    return "\n".join(parts)


def strict_json(value):
    """``value`` with every non-finite float (inf, NaN) replaced by None: JSON has no such numbers (a strict parser
    refuses Python's Infinity / NaN); each record says why a number is missing (e.g. not_tested_because)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return strict_json(value.item())
    return value


def finite_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ±inf as missing: a CSV cell is a number or empty."""
    return frame.replace([math.inf, -math.inf], math.nan)


def write_table(table: Table, out: Path) -> list[Path]:
    """The table's three files, each rendered first and written atomically (:mod:`ssvi.files`): a full or
    read-only file system is one error, and no file is left half-written."""
    paths = [Path(out) / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    for path, text in zip(paths, (finite_frame(table.data).to_csv(index=False), to_markdown(table), to_latex(table))):
        write_text(path, text)
    return paths
