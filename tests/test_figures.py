"""Every figure script of paper_figures/ draws PNG + PDF (and its report caption) from the aggregator's tables of
synthetic runs in the shape of the shipped configs (every method of config/paper.yaml, the ensembles of
config/config.yaml on ResNet-18 only, two architectures, the studies), and from empty tables ("no runs for this
figure") without crashing; every figure names n; no two texts of a figure overlap; fig1's point labels cover no
marker, error bar, line or other label and stay inside their panel; the figures drawn per density show every
method at every density it ran, with no panel that holds only the dense VI reference; ensembles sit at their
budget on a continuous density axis.

    python -m pytest tests/test_figures.py -q
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.transforms import Bbox
import pandas as pd
import pytest
import yaml

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


def shipped_shape(tmp: Path) -> dict:
    """The synthetic config: every method and density of config/paper.yaml, the ensembles of config/config.yaml
    (ResNet-18 only: VGG-16 has no dense-budget cell), ResNet-18 and VGG-16, and the synthetic studies."""
    paper, default = (yaml.safe_load((synth.REPO / "config" / name).read_text()) for name in ("paper.yaml", "config.yaml"))
    return synth.make_config(tmp, archs=["resnet18", "vgg16"], methods=paper["methods"], ensembles=default["ensembles"])


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figures")
    config = shipped_shape(tmp)
    dirs = synth.write_runs(config)
    synth.write_predictions(dirs)  # for the curves of the reliability and risk-coverage figures, and the ensembles
    synth.write_eval_probs(config)  # the ensembles' OOD and shift
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


DENSITY_FIGURES = {"shift_accuracy_vs_severity": "shift", "reliability_diagrams": "reliability",
                   "risk_coverage": "risk_coverage"}
REFERENCE = re.compile(r"dense_vi \(reference")


def panels(fig) -> list:
    """The panels of a figure that hold lines (not the count strips of the reliability diagrams)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def drawn(ax) -> list[str]:
    """The labels of what a panel draws (lines and error bars), legend-less artists left out."""
    artists = [*ax.get_lines(), *ax.containers]
    return [a.get_label() for a in artists if not a.get_label().startswith("_")]


@pytest.mark.parametrize("name", DENSITY_FIGURES)
def test_figures_by_density_show_every_method_at_every_density_and_no_reference_only_panel(tables, name):
    fig = load_figure(name).draw(tables / "tables")
    data = pd.read_csv(tables / "tables" / f"{DENSITY_FIGURES[name]}.csv")
    if name == "shift_accuracy_vs_severity":
        data = data[data["acc_pct_mean"].notna()]
    for dataset, arch in dict.fromkeys(zip(data["dataset"], data["arch"])):
        block = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        axes = [ax for ax in panels(fig) if ax.get_title().startswith(f"{dataset} / {arch}, ")]
        shown = set()
        for ax in axes:
            labels = [label for label in drawn(ax) if not REFERENCE.match(label)]
            assert labels, f"{ax.get_title()}: only the dense VI reference"
            title = ax.get_title()
            density = re.search(r"d = ([\d.]+)", title)
            for label in labels:  # each method in the panel of its density (dense cells: the 'd ≥ 1' panel)
                cell = block[block["method"] == label]["density"].unique()
                assert (density and float(density[1]) in cell) or ("d ≥ 1" in title and (cell >= 1).any()), (title, label)
                shown.add((label, float(density[1]) if density else float(cell.max())))
            assert len(labels) <= 5, title  # a crowded density gets a second panel
        expected = {(m, d) for m, d in zip(block["method"], block["density"]) if m != "dense_vi"}
        assert shown == expected, (dataset, arch)
    titles = [ax.get_title() for ax in panels(fig)]
    # a dense panel exactly where a method besides the dense VI reference ran at d >= 1 (the cheap alternatives
    # on both architectures, the ensembles such as dense VI x2 at d = 2 on ResNet-18 only)
    for arch in ("resnet18", "vgg16"):
        others = data[(data["arch"] == arch) & (data["density"] >= 1) & (data["method"] != "dense_vi")]
        assert any(t.startswith(f"digits / {arch}, d ≥ 1") for t in titles) == (len(others) > 0), arch
    plt.close(fig)


def test_density_axes_are_continuous_with_ensembles_at_their_budget_and_shared_densities_side_by_side(tables):
    fig = load_figure("metrics_vs_density").draw(tables / "tables")
    fig.canvas.draw()
    ax = next(a for a in fig.axes if a.get_title() == "digits / resnet18")
    assert ax.get_xscale() == "log"
    ticks = [float(t.get_text()) for t in ax.get_xticklabels() if t.get_text()]
    assert {0.05, 0.1, 0.2, 1.0, 2.0} <= set(ticks)  # the dense boundary and dense VI x2's budget are ticks
    points = {c.get_label(): c.lines[0].get_xdata() for c in ax.containers}
    assert points["dense_vi ×2 (d 1 each)"] == pytest.approx([2.0], rel=1e-9)  # alone at its density: not moved
    at_tenth = sorted(x for label, xs in points.items() for x in xs if abs(x / 0.1 - 1) < 0.2)
    assert len(at_tenth) >= 7 and len(set(at_tenth)) == len(at_tenth)  # the methods at d = 0.1, side by side
    assert all(abs(x / 0.1 - 1) < 0.15 for x in at_tenth)  # ... close to the 0.1 tick
    plt.close(fig)


def test_ood_figure_has_a_panel_per_set_and_score(tables):
    fig = load_figure("ood_auroc_vs_density").draw(tables / "tables")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2 * 2 * 2  # archs x OOD sets x (max_prob, MI)
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


def text_box(text, renderer):
    """The box of a text itself (an annotation's own extent also holds its leader line)."""
    return Text.get_window_extent(text, renderer)


def overlapping(texts, renderer) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes overlap; two slanted texts (rotated tick labels side by side, whose upright boxes
    overlap while the words do not) are not compared."""
    boxes = [(t.get_text(), text_box(t, renderer), t.get_rotation() % 180 != 0) for t in texts
             if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, box_a, slanted_a) in enumerate(boxes) for b, box_b, slanted_b in boxes[i + 1:]
            if not (slanted_a and slanted_b) and box_a.overlaps(box_b)]


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


def covered(box, ax) -> list[str]:
    """What in ``ax`` a display box covers: markers (their drawn size), error bars and line segments."""
    hits = []
    for line in ax.get_lines():
        points = line.get_transform().transform(line.get_xydata())
        if line.get_marker() not in (None, "None", "", " "):
            r = line.get_markersize() * ax.figure.dpi / 72 / 2
            hits += [f"marker of {line.get_label()}" for x, y in points if box.overlaps(Bbox([[x - r, y - r], [x + r, y + r]]))]
        if line.get_linestyle() not in ("None", "", " "):
            hits += [f"line of {line.get_label()}" for a, b in zip(points[:-1], points[1:]) if crosses(box, a, b)]
    for collection in ax.collections:
        for path in collection.get_paths():
            points = collection.get_transform().transform(path.vertices)
            hits += ["error bar" for a, b in zip(points[:-1], points[1:]) if crosses(box, a, b)]
    return hits


def crosses(box, a, b, samples: int = 50) -> bool:
    return any(box.contains(a[0] + (b[0] - a[0]) * k / samples, a[1] + (b[1] - a[1]) * k / samples)
               for k in range(samples + 1))


def test_fig1_labels_cover_no_marker_error_bar_or_line_and_stay_inside_their_panel(tables):
    """Issue 28: 'd = ...' labels sat over markers and error bars, and 'd = 2' was clipped at the panel's edge."""
    main = pd.read_csv(tables / "tables" / "main.csv")
    fig = load_figure("fig1_flops_vs_accuracy").draw(tables / "tables")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text().startswith("d = ")]
        dataset, arch = ax.get_title().split(" / ")
        assert len(labels) == len(main[(main["dataset"] == dataset) & (main["arch"] == arch)])  # every point
        frame = ax.get_window_extent(renderer)
        for label in labels:
            box = text_box(label, renderer)
            assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), label.get_text()
            assert covered(box, ax) == [], (ax.get_title(), label.get_text())
        assert overlapping(labels, renderer) == []
    plt.close(fig)


def shown_ticks(labels, limits, coordinate: int) -> list:
    """The tick labels drawn: those of ticks inside the axis' limits (Matplotlib keeps others, undrawn)."""
    low, high = sorted(limits)
    return [t for t in labels if low <= t.get_position()[coordinate] <= high]


@pytest.mark.parametrize("name", FIGURES)
def test_no_two_texts_of_a_figure_overlap(tables, name):
    """Titles, axis labels, tick labels, the legend and the figure title each keep their own place."""
    fig = load_figure(name).draw(tables / "tables")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *shown_ticks(ax.get_xticklabels(), ax.get_xlim(), 0),
                  *shown_ticks(ax.get_yticklabels(), ax.get_ylim(), 1)]
    assert overlapping(texts, renderer) == []
    plt.close(fig)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_names_n(tables, name):
    fig = load_figure(name).draw(tables / "tables")
    assert re.search(r"n = \d+(–\d+)? (seeds|runs)", fig._suptitle.get_text())
    plt.close(fig)
