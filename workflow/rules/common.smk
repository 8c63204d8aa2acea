# Config validation, the run grid and input functions: the one place that knows paths and grids.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir)))                         # the ssvi package
sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))  # grid.py
import grid  # noqa: E402
from ssvi.config import ConfigError, RunConfig  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")

PYTHON = sys.executable  # the interpreter running Snakemake (the project venv), also inside SLURM jobs
RESULTS = config.get("results_dir", "results")
DATA_DIR = config.get("data_dir", "data")
RESOURCES = config.get("resources", {})
RUNS = grid.run_grid(config)


def _check_runs():
    """A bad run-config value stops the DAG before any job starts, naming the key and the run."""
    for path, run in RUNS.items():
        try:
            RunConfig.from_dict(grid.run_overrides(config, run))
        except ConfigError as error:
            raise ValueError(f"config error in run {path}: {error}") from None


_check_runs()


wildcard_constraints:
    dataset="[a-z0-9_]+",
    arch="[A-Za-z0-9_./-]+?",
    method="[a-z0-9_]+",
    variant="[A-Za-z0-9_.+-]+",
    density="[0-9.e-]+",
    seed="[0-9]+",


def run_dir(path):
    return f"{RESULTS}/runs/{path}"


def run_file(path, name):
    return str(Path(run_dir(path)) / name)


def run_of(wildcards):
    path = f"{wildcards.dataset}/{wildcards.arch}/{wildcards.method}/{wildcards.variant}/d{wildcards.density}/seed{wildcards.seed}"
    if path not in RUNS:
        raise ValueError(f"{path} is not a run of this config")
    return RUNS[path]


def train_inputs(wildcards):
    """Data must be verified first; a post-hoc run needs its finished dense_vi run (a real DAG edge)."""
    run = run_of(wildcards)
    inputs = {"data": ancient(f"{RESULTS}/data/{run.dataset}.json")}  # re-verifying data must not retrain
    if run.method == "posthoc":
        inputs["dense"] = run_file(grid.dense_source(config, run.dataset, run.arch, run.seed).path, "metrics.json")
    return inputs


def train_arguments(wildcards, threads):
    values = {**grid.run_overrides(config, run_of(wildcards)), "data_dir": DATA_DIR, "threads": threads}
    return " ".join(f"--set {key}={json.dumps(value)!r}" for key, value in values.items())


def all_metrics():
    return [run_file(path, "metrics.json") for path in sorted(RUNS)]


def all_evaluations():
    return [run_file(path, "ood_shift.json") for path in sorted(RUNS)]


def all_outputs():
    return all_metrics() + TABLES + FIGURES
