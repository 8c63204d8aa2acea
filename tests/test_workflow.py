"""The Snakemake DAG: lint, schema validation, the paper grid (dry run), and a small end-to-end run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def snakemake(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    command = ["timeout", "-k", "30", str(timeout), SNAKEMAKE, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_lint_finds_nothing_but_the_environment_note():
    result = snakemake("--lint")
    lints = set(re.findall(r"^\s+\* (.+?):?$", result.stdout + result.stderr, re.M))
    # jobs run in the project's own virtual environment (the interpreter running Snakemake), not conda
    assert lints <= {"Specify a conda environment or container for each rule.:",
                     "Specify a conda environment or container for each rule."}, lints


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test_dag.yaml", "test_slurm.yaml"])
def test_shipped_configs_are_valid(name):
    validate(load(name), SCHEMA)


@pytest.mark.parametrize("change, key", [
    ({"seeds": [-1]}, "seeds"),
    ({"methods": {"ssvi": [1.5]}}, "methods"),
    ({"datasets": ["imagenet"]}, "datasets"),
    ({"bogus_key": 1}, "bogus_key"),
    ({"resources": {"gpu": -1}}, "gpu"),
])
def test_schema_rejects_bad_configs(change, key):
    config = {**load("config.yaml"), **change}
    with pytest.raises(Exception) as error:
        validate(config, SCHEMA)
    assert key in str(error.value)


def test_bad_run_value_stops_the_dag_before_any_job(tmp_path):
    config = {**load("test_dag.yaml"), "run": {"lr": -1.0}, "results_dir": str(tmp_path)}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode != 0
    assert "lr=-1.0 is out of range" in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_paper_grid_dry_run_lists_every_run_once_with_posthoc_edges():
    config = load("paper.yaml")
    expected = grid.run_grid(config)
    # the paper grid: 2 datasets x 2 archs x 3 seeds x (1 dense + 3 densities x (3 methods + 2 posthoc variants))
    # + criteria ablation (5 extra) + robustness (15 extra cells x 2 methods) on cifar10/resnet18, x 3 seeds
    assert len(expected) == 2 * 2 * 3 * (1 + 3 * 5) + 3 * (5 + 2 * 15)
    result = snakemake("runs", "-n", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    jobs = re.findall(r"rule train:\n\s+input: (.*)\n\s+output: results/runs/(.*)/metrics.json", text)
    assert sorted(path for _, path in jobs) == sorted(expected)  # every run exactly once
    posthoc = [(inputs, path) for inputs, path in jobs if expected[path].method == "posthoc"]
    assert posthoc
    for inputs, path in posthoc:  # a real DAG edge to the dense_vi run of the same dataset, arch and seed
        run = expected[path]
        source = grid.dense_source(config, run.dataset, run.arch, run.seed).path
        assert f"results/runs/{source}/metrics.json" in inputs.split(", ")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, re.M))
    assert int(counts["prepare_data"]) == 2 and int(counts["train"]) == len(expected)


@pytest.mark.slow
def test_end_to_end_dag_and_regeneration(tmp_path):
    config = load("test_dag.yaml")
    out = tmp_path / "results"
    run = snakemake("--cores", "2", "--configfile", "config/test_dag.yaml", "--config", f"results_dir={out}",
                    timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for path in grid.run_grid(config):
        metrics = json.loads((out / "runs" / path / "metrics.json").read_text())
        assert {"acc", "nll", "ece", "ece_ssvi", "brier", "train_flops"} <= set(metrics)
        assert (out / "runs" / path / "ood_shift.json").exists()
    for name in ("main", "claims", "ood", "shift", "criteria", "robustness", "iou_end"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(figures) == 7 and all((out / "figures" / f.replace(".png", ".pdf")).exists() for f in figures)
    # regenerating tables and figures never retrains: only aggregation and figure jobs run
    for table in (out / "tables").glob("*"):
        table.unlink()
    regenerate = snakemake("tables_and_figures", "--cores", "2", "--configfile", "config/test_dag.yaml",
                           "--config", f"results_dir={out}", timeout=300)
    assert regenerate.returncode == 0, regenerate.stderr[-3000:]
    jobs = set(re.findall(r"rule (\w+):", regenerate.stdout + regenerate.stderr))
    assert jobs and not jobs & {"train", "evaluate"}, jobs
    assert (out / "tables" / "main.md").exists()
