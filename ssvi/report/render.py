"""Rendering: display cells, captions and the files of every table.

Takes a ``Table`` (``data``: the numbers, a plain DataFrame, written as CSV; ``display``: the formatted
cells; ``caption``); gives ``<name>.csv``, ``<name>.md`` (one sub-table per ``blocks`` value), ``<name>.tex``,
``<name>.html`` (a page of its own: caption, then the tables, sortable by a click on a column header, no
outside resources) and ``<name>.caption.rst`` (the caption as the HTML report shows it), each written atomically. The helpers ``pm``,
``pm_columns``, ``n_cell`` and ``caption`` make the display cells and captions the table builders use; the
definitions of ECE and FLOPs join a caption only when its table has such columns.
"""

from __future__ import annotations

import html
import math
import re
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
    blocks: list[str] = field(default_factory=list)  # Markdown, HTML: one sub-table per value of these columns
    prune_blocks: bool = False                       # Markdown, HTML: drop a block's columns that are all "—"

    def __post_init__(self):
        self.caption = with_definitions(self.caption, self.display)


def with_definitions(text: str, display: pd.DataFrame) -> str:
    """``text`` followed by the definitions of the ECE variants and of FLOPs, each only when a column of the table
    (or, in a long table, a value of its ``metric`` column) names it."""
    names = " ".join(map(str, display.columns))
    if "metric" in display.columns:
        names += " " + " ".join(map(str, display["metric"].unique()))
    notes = [note for word, note in (("ECE", ECE_NOTE), ("FLOPs", FLOPS_NOTE)) if word in names]
    return " ".join([text, *(f"{note}." for note in notes)])


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
    """Table caption: what it shows, how cells are summarised, n (``n_column``: the table has an n column); the
    Table adds the definitions its columns need."""
    return f"{text}. {spread}; {seeds_note(ns, unit, n_column)}."


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
    for heading, block in _blocks(table):
        parts += ([f"### {heading}", ""] if heading is not None else []) + [md(block), ""]
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


HTML_STYLE = """body{font-family:system-ui,sans-serif;font-size:14px;margin:1em;color:#111}
p.caption{max-width:70em;line-height:1.4;color:#333}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none}th[data-order=ascending]::after{content:" \\25B2"}
th[data-order=descending]::after{content:" \\25BC"}tbody tr:nth-child(even){background:#fafafa}"""
# a click on a column header sorts the rows by it (numbers by the value that leads the cell: "97.9 ± 0.5" -> 97.9)
HTML_SORT = """document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.dataset.order !== "ascending";
    th.parentNode.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
    th.dataset.order = ascending ? "ascending" : "descending";
    var key = function (row) {
      var text = row.cells[column].textContent.trim(), number = parseFloat(text.replace("\u2212", "-"));
      return isNaN(number) ? [1, text] : [0, number];
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), order = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});"""


def _blocks(table: Table) -> list[tuple[str | None, pd.DataFrame]]:
    """(heading, cells) of each sub-table: one per value of ``table.blocks``, or the whole table."""
    if not table.blocks or table.display.empty:
        return [(None, table.display)]
    parts = []
    for key, block in table.display.groupby(table.blocks, sort=False):
        block = block.drop(columns=table.blocks)
        if table.prune_blocks:
            block = block.loc[:, ~block.astype(str).eq("—").all()]
        parts.append((" / ".join(map(str, key if isinstance(key, tuple) else (key,))), block))
    return parts


def to_html(table: Table) -> str:
    """A page of its own: the table's name and caption, then its (sub-)tables, sortable by column."""
    parts = [f"<h1>{html.escape(table.name)}</h1>", f'<p class="caption">{html.escape(table.caption)}</p>']
    if table.display.empty:
        parts.append("<p><em>No runs for this table.</em></p>")
    else:
        for heading, block in _blocks(table):
            if heading is not None:
                parts.append(f"<h2>{html.escape(heading)}</h2>")
            parts.append(block.astype(str).to_html(index=False, escape=True, border=0, classes="sortable",
                                                   na_rep="—"))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(table.name)}</title>'
            f"<style>{HTML_STYLE}</style></head>\n<body>\n" + "\n".join(parts)
            + f"\n<script>{HTML_SORT}</script>\n</body></html>\n")


def report_caption(text: str) -> str:
    """A caption for the HTML report (reStructuredText, as Snakemake's report reads it, which passes it through
    Jinja first): the text as one raw HTML paragraph, braces as entities so no template syntax can form."""
    escaped = html.escape(re.sub(r"\s+", " ", text).strip()).replace("{", "&#123;").replace("}", "&#125;")
    return f".. raw:: html\n\n   <p>{escaped}</p>\n"


TABLE_FILES = ("csv", "md", "tex", "html", "caption.rst")


def write_table(table: Table, out: Path) -> list[Path]:
    paths = [Path(out) / f"{table.name}.{ext}" for ext in TABLE_FILES]
    texts = (finite_frame(table.data).to_csv(index=False), to_markdown(table), to_latex(table), to_html(table),
             report_caption(table.caption))
    for path, text in zip(paths, texts):
        write_text(path, text)
    return paths
