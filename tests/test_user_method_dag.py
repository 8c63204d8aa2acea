"""A researcher's own method through the whole workflow: the KL-weight variant of docs/adding-a-method.md (its
code block, loaded from $SSVI_EXTRA_BASELINES) with two values of its option from one workflow config, trained by
the DAG (tiny nets, 2 epochs), into the tables, the views and the figures; then the HTML report of that DAG
(`snakemake --report`): parsed, every table inline as HTML with its caption, every figure with its caption, the
stages in a reader's order (slow: a few minutes on 2 cores).

    .venv/bin/python -m pytest tests/test_user_method_dag.py -q
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from docs_examples import code_block, write_kl_weight_plugin  # noqa: E402

from ssvi.methods import EXTRA_BASELINES_ENV  # noqa: E402
from ssvi.report import sections  # noqa: E402
from ssvi.report.build import TABLE_NAMES  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
FIGURES = ["fig1_flops_vs_accuracy", "metrics_vs_density", "criteria_comparison", "robustness_heatmap",
           "robustness_sigma_lines", "schedule_ablation", "iou_matrices", "ood_auroc_vs_density",
           "shift_accuracy_vs_severity", "reliability_diagrams", "risk_coverage"]
LABELS = ["dense_vi_klw (kl_factor 0.5)", "dense_vi_klw (kl_factor 2)"]
# the docs' workflow config, with the tiny recipe of the tests
TINY_RUN = {"width": 0.125, "image_size": 8, "epochs": 2, "num_samples": 2, "eval_batch_size": 2000}
# a comparison of the two values, declared in the config's claims block (docs/verdicts.md)
QUESTION = {"name": "klw-half-vs-double", "a": {"method": LABELS[0], "density": 1.0},
            "b": {"method": LABELS[1], "density": 1.0}, "metric": "nll", "at_most": 0.0}


def docs_methods() -> dict:
    """The ``methods:`` block of the docs' workflow example, without the SSVI line (fewer runs to train)."""
    methods = yaml.safe_load(code_block("methods:", "yaml"))["methods"]
    assert methods["dense_vi_klw"] == {"densities": [1.0], "extra": {"kl_factor": [0.5, 2.0]}}
    return {name: value for name, value in methods.items() if name != "ssvi"}


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user_method")
    env = {**os.environ, EXTRA_BASELINES_ENV: str(write_kl_weight_plugin(tmp / "plugins").parent)}
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"results_dir": str(tmp / "results"), "data_dir": "data", "datasets": ["digits"],
                                      "archs": ["resnet18"], "seeds": [0], "methods": docs_methods(),
                                      "run": TINY_RUN, "claims": {"questions": [QUESTION]}}))
    run = subprocess.run(["timeout", "-k", "30", "1500", SNAKEMAKE, "--cores", "2", "--configfile", str(config)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = subprocess.run(["timeout", "-k", "30", "600", SNAKEMAKE, "--report", str(tmp / "report.html"),
                             "--configfile", str(config)], cwd=REPO, env=env, capture_output=True, text=True)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_the_docs_kl_weight_variant_runs_with_two_values_into_every_table_and_view(dag):
    runs = dag / "results" / "runs" / "digits" / "resnet18"
    weights = {variant: [row["kl_weight"] for row in json.loads((runs / variant / "d1" / "seed0" / "metrics.json")
                                                                  .read_text())["history"]]
               for variant in ("dense_vi/default", "dense_vi_klw/default+kl_factor0.5", "dense_vi_klw/default+kl_factor2")}
    assert weights["dense_vi_klw/default+kl_factor0.5"] == pytest.approx([0.5 * w for w in weights["dense_vi/default"]])
    assert weights["dense_vi_klw/default+kl_factor2"] == pytest.approx([2 * w for w in weights["dense_vi/default"]])
    tables = dag / "results" / "tables"
    for name in ("main", "calibrated", "density_sweep", "ood", "shift", "shift_corruptions", "reliability",
                 "risk_coverage"):
        methods = set(pd.read_csv(tables / f"{name}.csv")["method"])
        assert {"dense_vi", *LABELS} <= methods, (name, methods)
        assert all(label in (tables / f"{name}.md").read_text() for label in LABELS), name
    for name in ("fig1_flops_vs_accuracy", "metrics_vs_density", "ood_auroc_vs_density", "shift_accuracy_vs_severity",
                 "reliability_diagrams", "risk_coverage"):
        spec = importlib.util.spec_from_file_location(f"figure_{name}", REPO / "paper_figures" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fig = module.draw(tables)
        legend = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
        assert all(label in legend for label in LABELS), (name, legend)
        plt.close(fig)
    # the declared comparison of the two values is a verdict row; one seed each: listed, not tested
    claims = pd.read_csv(tables / "claims.csv").set_index("claim")
    assert claims.loc[QUESTION["name"], "source"] == "declared"
    assert claims.loc[QUESTION["name"], "verdict"] == "not tested"
    row = next(c for c in json.loads((tables / "claims.json").read_text())["claims"] if c["claim"] == QUESTION["name"])
    assert [n["what"] for n in row["numbers"]] == [f"digits/resnet18: nll {LABELS[0]} at d = 1 − {LABELS[1]} at d = 1"]


class Tables(HTMLParser):
    """The tables of an HTML page: their header cells, and the page's caption paragraph."""

    def __init__(self):
        super().__init__()
        self.headers, self.caption, self._in = [], "", None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.headers.append([])
        if tag == "th" or (tag == "p" and ("class", "caption") in attrs):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "th":
            self.headers[-1].append(data.strip())
        elif self._in == "p":
            self.caption += data


def embedded(report: str, name: str) -> dict:
    """A JSON object the report embeds as ``var <name> = ...;``."""
    return json.loads(re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', report, re.S).group(1))


@pytest.mark.slow
def test_the_html_report_shows_every_table_inline_and_every_entry_with_its_caption_in_reading_order(dag):
    report = (dag / "report.html").read_text()
    results, categories = embedded(report, "results"), embedded(report, "categories")
    by_name = {Path(path).name: entry for path, entry in results.items()}
    # every table as an HTML page (shown inline, in an iframe), none as a Markdown download
    assert not [name for name in by_name if name.endswith((".md", ".csv", ".tex"))]
    for name in TABLE_NAMES:
        entry = by_name[f"{name}.html"]
        assert entry["mime_type"] == "text/html", name
        page = base64.b64decode(entry["data_uri"].split("base64,", 1)[1]).decode()
        parsed = Tables()
        parsed.feed(page)
        markdown_caption = (dag / "results" / "tables" / f"{name}.md").read_text().split(" — ", 1)[1].splitlines()[0]
        assert parsed.caption == markdown_caption, name  # the table's own caption, above it
        assert parsed.headers or "No runs for this table" in page, name
        assert 'class="dataframe sortable"' in page or not parsed.headers, name
        # the report's description of the entry: the same caption
        assert entry["caption"].startswith("<p>") and markdown_caption[:60] in _text(entry["caption"]), name
        assert entry["labels"] == sections.labels(name), name
    main = Tables()
    main.feed(base64.b64decode(by_name["main.html"]["data_uri"].split("base64,", 1)[1]).decode())
    assert "method" in main.headers[0] and "acc (%)" in main.headers[0]
    for name in FIGURES:
        entry = by_name[f"{name}.png"]
        assert entry["mime_type"] == "image/png" and len(_text(entry["caption"])) > 100, name
        shown = _text(entry["caption"]).split("This figure: ", 1)[1]
        assert "n = " in shown or "no runs for this figure" in shown, name
    # one category per stage, numbered in a reader's order, each entry in the one its stage names
    assert sorted(categories) == [f"{i} {title}" for i, (title, _) in enumerate(sections.SECTIONS, 1)]
    for category, subcategories in categories.items():
        for paths in subcategories.values():
            for path in paths:
                name = Path(path).name
                kind = "figure" if name.endswith(".png") else "table"
                assert sections.category(name.split(".")[0], kind) == category, name
    assert sections.category("main") < sections.category("calibrated") < sections.category("ood") \
        < sections.category("criteria") < sections.category("claims")


def _text(html: str) -> str:
    import html as html_module
    return html_module.unescape(re.sub(r"<[^>]+>", "", html))
