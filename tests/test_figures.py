"""Every figure script of paper_figures/ draws PNG + PDF from the aggregator's tables of synthetic runs,
and from empty tables ("no runs for this figure") without crashing; every figure names n; fig1's tick
labels and point labels do not overlap.

    python -m pytest tests/test_figures.py -q
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

from ssvi.report.build import aggregate as build_aggregate  # noqa: E402

FIGURES_DIR = synth.REPO / "paper_figures"
FIGURES = ["fig1_flops_vs_accuracy", "metrics_vs_density", "criteria_comparison", "robustness_heatmap",
           "iou_matrices", "ood_auroc_vs_density", "shift_accuracy_vs_severity", "schedule_ablation",
           "robustness_sigma_lines", "reliability_diagrams", "risk_coverage"]
EVAL_FIGURES = ["ood_auroc_vs_density", "shift_accuracy_vs_severity"]  # need ood_shift.json


def load_figure(name: str):
    spec = importlib.util.spec_from_file_location(f"paper_figure_{name}", FIGURES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figures")
    config = synth.make_config(tmp)
    dirs = synth.write_runs(config)
    synth.write_predictions(dirs)  # for the curves of the reliability and risk-coverage figures
    build_aggregate(config, tmp / "tables", dirs)
    build_aggregate(config, tmp / "empty_tables", [])
    unevaluated = synth.make_config(tmp / "unevaluated")  # finished runs, no ssvi evaluate yet
    build_aggregate(unevaluated, tmp / "unevaluated_tables",
                        synth.write_runs(unevaluated, evaluate=lambda spec: False))
    return tmp


def test_every_figure_script_is_listed():
    scripts = {p.stem for p in FIGURES_DIR.glob("*.py")} - {"common", "__init__"}
    assert scripts == set(FIGURES)


@pytest.mark.parametrize("name", FIGURES)
def test_figure_from_synthetic_runs(tables, name):
    out = tables / "figures"
    module = load_figure(name)
    assert "python paper_figures/" in module.__doc__
    assert module.main(["--tables", str(tables / "tables"), "--out", str(out)]) == 0
    for ext in ("png", "pdf"):
        assert (out / f"{name}.{ext}").stat().st_size > 10_000, f"{name}.{ext} looks empty"
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", FIGURES)
def test_figure_from_empty_tables(tables, name):
    out = tables / "empty_figures"
    module = load_figure(name)
    assert module.draw(tables / "empty_tables") is None  # nothing to plot -> the "no runs" figure
    assert module.main(["--tables", str(tables / "empty_tables"), "--out", str(out)]) == 0
    for ext in ("png", "pdf"):
        assert (out / f"{name}.{ext}").stat().st_size > 1_000


@pytest.mark.parametrize("name", EVAL_FIGURES)
def test_eval_figure_without_ood_shift_is_the_empty_figure(tables, name):
    out = tables / "unevaluated_figures"
    module = load_figure(name)
    assert module.draw(tables / "unevaluated_tables") is None
    assert module.main(["--tables", str(tables / "unevaluated_tables"), "--out", str(out)]) == 0
    assert (out / f"{name}.png").stat().st_size > 1_000 and (out / f"{name}.pdf").is_file()


def test_shift_figure_has_a_panel_per_density(tables):
    fig = load_figure("shift_accuracy_vs_severity").draw(tables / "tables")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["digits / resnet18, d = 0.1 (dense VI: d = 1)", "digits / resnet18, d = 0.05 (dense VI: d = 1)"]
    labels = {line.get_label() for ax in fig.axes for line in ax.containers}
    assert {"dense_vi (d = 1)", "ssvi", "posthoc (ft 2)"} <= labels
    plt.close(fig)
    fig = load_figure("ood_auroc_vs_density").draw(tables / "tables")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2 * 2  # OOD sets x (max_prob, neg_mutual_info)
    plt.close(fig)


def test_missing_tables_folder_gives_the_empty_figure(tmp_path):
    module = load_figure("fig1_flops_vs_accuracy")
    assert module.main(["--tables", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "fig1_flops_vs_accuracy.png").is_file()


def test_figure_command_line(tables, tmp_path):
    cmd = [sys.executable, str(FIGURES_DIR / "criteria_comparison.py"), "--tables", str(tables / "tables"),
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=synth.REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "criteria_comparison.png").is_file() and (tmp_path / "criteria_comparison.pdf").is_file()


def overlapping(texts, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def test_fig1_labels_do_not_collide_on_a_narrow_flops_range(tmp_path):
    """Issue 15: minor log ticks 3×10⁹, 4×10⁹, 6×10⁹ collided, and so did nearby 'd = ...' labels."""
    rows = [("dense_vi", 1.0, 6e9, 90.0), ("ssvi", 0.1, 3.2e9, 89.5), ("ssvi", 0.05, 3.0e9, 89.3),
            ("gradual_pruning", 0.1, 4.0e9, 88.0), ("gradual_pruning", 0.05, 3.9e9, 87.9),
            ("static_sparse", 0.1, 3.1e9, 89.4)]
    pd.DataFrame([{"dataset": "cifar10", "arch": "resnet18", "method": m, "density": d, "n": 3,
                   "train_flops_mean": f, "train_flops_std": 0.0, "acc_pct_mean": a, "acc_pct_std": 0.3}
                  for m, d, f, a in rows]).to_csv(tmp_path / "main.csv", index=False)
    fig = load_figure("fig1_flops_vs_accuracy").draw(tmp_path)
    fig.canvas.draw()  # tick labels are filled in at draw time
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] == []  # minor ticks unlabelled
    ticks = ax.get_xticklabels()
    assert len([t for t in ticks if t.get_text()]) >= 2
    assert overlapping(ticks, renderer) == []
    assert overlapping([t for t in ax.texts if re.match(r"d ?= ?[\d.]+$", t.get_text())], renderer) == []
    assert "n = 3 seeds" in fig._suptitle.get_text()
    plt.close(fig)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_names_n(tables, name):
    fig = load_figure(name).draw(tables / "tables")
    assert re.search(r"n = \d+ (seeds|runs)", fig._suptitle.get_text())
    plt.close(fig)
