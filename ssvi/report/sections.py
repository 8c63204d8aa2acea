"""The HTML report's order (``snakemake --report``): one category per stage, in the order a reader goes, every
table and figure in exactly one of them, numbered within it.

    category("calibrated")         -> "2 Calibration and selective prediction"
    labels("calibrated", "table")  -> {"#": "2.01", "entry": "calibrated (table)"}

Used by workflow/rules/aggregate.smk (the report flags of the tables and figures) and the report test.
"""

from __future__ import annotations

SECTIONS = [
    ("Main results", ["main", "fig1_flops_vs_accuracy", "density_sweep", "metrics_vs_density", "paper_comparison"]),
    ("Calibration and selective prediction", ["calibrated", "reliability", "reliability_diagrams", "risk_coverage",
                                              "risk_coverage_figure"]),
    ("OOD detection and distribution shift", ["ood", "ood_auroc_vs_density", "shift", "shift_accuracy_vs_severity",
                                              "shift_corruptions"]),
    ("Ablations and robustness", ["criteria", "criteria_comparison", "criteria_vs_mean",
                                  *[f"{kind}_{stage}" for kind in ("iou", "spearman")
                                    for stage in ("start", "middle", "end")],
                                  "iou_matrices", "robustness", "robustness_heatmap", "robustness_sigma_lines",
                                  "robustness_spread", "schedule_ablation", "schedule_ablation_figure"]),
    ("Claims and the benchmark's questions", ["claims", "undecided"]),
]
# a figure named like a table gets its own entry name
FIGURE_ENTRIES = {"risk_coverage": "risk_coverage_figure", "schedule_ablation": "schedule_ablation_figure"}


def entry(name: str, kind: str) -> str:
    return FIGURE_ENTRIES.get(name, name) if kind == "figure" else name


def _place(name: str, kind: str) -> tuple[int, int]:
    wanted = entry(name, kind)
    for number, (_, entries) in enumerate(SECTIONS, 1):
        if wanted in entries:
            return number, entries.index(wanted) + 1
    raise KeyError(f"{kind} {name!r} has no place in ssvi.report.sections.SECTIONS; add it to the section it belongs to")


def category(name: str, kind: str = "table") -> str:
    number, _ = _place(name, kind)
    return f"{number} {SECTIONS[number - 1][0]}"


def labels(name: str, kind: str = "table") -> dict[str, str]:
    """The report's columns of an entry: its number (the report sorts by it) and what it is."""
    number, position = _place(name, kind)
    return {"#": f"{number}.{position:02d}", "entry": f"{name} ({kind})"}
