# Config validation, the run grid and input functions: the one place that knows paths and grids.
import hashlib
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir)))                         # the ssvi package
sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))  # grid.py
import grid  # noqa: E402
from ssvi.config import ConfigError, RunConfig, coerce_numbers, load_yaml, results_config  # noqa: E402
from ssvi.locks import hold_results_directory, release_results_directory  # noqa: E402
from ssvi.packages import check_installed  # noqa: E402
from ssvi.report import sections as report_section  # noqa: E402
from ssvi.report.build import EXTRA_FILES as AGGREGATE_EXTRA_FILES, TABLE_NAMES  # noqa: E402
from ssvi.report.render import TABLE_FILES  # noqa: E402
from ssvi.rundir import METRICS, damaged_files  # noqa: E402
from ssvi.shift import datasets_to_verify  # noqa: E402


def _read_config():
    """Snakemake's YAML reader keeps the last of two equal keys and reads 1e-3 as a string: re-read each
    config file strictly (a duplicate key stops the DAG, naming file and lines), then make exponent
    floats numbers, before the schema sees them."""
    for path in workflow.configfiles:
        load_yaml(path)
    config.update(coerce_numbers(dict(config)))
    validate(config, schema="../schemas/config.schema.yaml")


_read_config()

PYTHON = sys.executable  # the interpreter running Snakemake (the project venv), also inside SLURM jobs
RESULTS = config.get("results_dir", "results")
TABLES_DIR = f"{RESULTS}/tables"
FIGURES_DIR = f"{RESULTS}/figures"
RESOLVED_CONFIG = f"{TABLES_DIR}/workflow_config.json"
# the config the aggregation reads, without results_dir: where the results directory is (copied or moved since)
# decides nothing, and a copy's file stays valid; its digest lets the aggregation refuse a stale one
RESOLVED_TEXT = json.dumps({k: v for k, v in config.items() if k != "results_dir"}, sort_keys=True, indent=1)
RESOLVED_SHA256 = hashlib.sha256(RESOLVED_TEXT.encode()).hexdigest()
EXPECTED_VALUES = "results/expected/paper.yaml"
DATA_DIR = config.get("data_dir", "data")
RESOURCES = config.get("resources", {})
SKIP = config.get("evaluation", {}).get("skip", [])  # evaluation sets not evaluated (contract C-B)
RUNS = grid.run_grid(config)
ENSEMBLE_MEMBERS = grid.ensemble_members(config)  # their evaluation keeps the per-set probabilities ensembles need


def _expected_configs():
    """A bad run-config value stops the DAG before any job starts, naming the key and the run."""
    expected = {}
    for path, run in RUNS.items():
        try:
            expected[path] = RunConfig.from_dict(grid.run_overrides(config, run)).to_dict()
        except ConfigError as error:
            raise ValueError(f"config error in run {path}: {error}") from None
    return expected


EXPECTED = _expected_configs()


def _check_packages():
    """Optional packages (a method's required_packages, TensorBoard for `tensorboard: true`) of every run that is
    not finished and evaluated: missing, they stop the DAG here instead of failing inside each job."""
    pending = {path: EXPECTED[path] for path in RUNS
               if not all(Path(run_file(path, name)).exists() for name in (METRICS, "ood_shift.json"))}
    check_installed(pending)



def _check_finished_runs():
    """A finished run whose result files are damaged stops the DAG before any job starts (Snakemake would
    otherwise take it as done), naming the file, what to delete and what re-running then redoes."""
    damaged = [damage for path in RUNS for damage in
               (damaged_files(Path(run_dir(path))) if Path(run_file(path, METRICS)).exists() else [])]
    if damaged:
        raise ValueError(f"{len(damaged)} damaged result file(s); {damaged[0].message()}"
                         + (f" (also: {', '.join(str(d.file) for d in damaged[1:6])})" if len(damaged) > 1 else ""))


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


def run_path(wildcards):
    return f"{wildcards.dataset}/{wildcards.arch}/{wildcards.method}/{wildcards.variant}/d{wildcards.density}/seed{wildcards.seed}"


def run_of(wildcards):
    path = run_path(wildcards)
    if path not in RUNS:
        raise ValueError(f"{path} is not a run of this config")
    return RUNS[path]


def data_record(name):
    return f"{RESULTS}/data/{name}.json"


def verified_datasets():
    """Every dataset a run trains on or evaluates against (prepare_data verifies each on the submit host)."""
    return sorted({name for dataset in {run.dataset for run in RUNS.values()} for name in datasets_to_verify(dataset, SKIP)})


def train_inputs(wildcards):
    """The verified data of the run and of every evaluation set it needs; a post-hoc or Laplace run needs the
    finished run it starts from (a real DAG edge)."""
    run = run_of(wildcards)
    # re-verifying data must not retrain: ancient()
    inputs = {"data": [ancient(data_record(name)) for name in datasets_to_verify(run.dataset, SKIP)]}
    source = grid.source_run(config, run)
    if source is not None:
        inputs["source"] = run_file(source.path, "metrics.json")
    return inputs


def resolved_run_config(wildcards):
    """The run's result identity as one string: a changed value re-runs the job (params rerun trigger);
    environment keys (data_dir, threads, ...) are left out, so changing them does not retrain."""
    return json.dumps(results_config(EXPECTED[run_path(wildcards)]), sort_keys=True)


def train_arguments(wildcards, threads):
    values = {**grid.run_overrides(config, run_of(wildcards)), "data_dir": DATA_DIR, "threads": threads}
    return shell_words(word for key, value in values.items() for word in ("--set", f"{key}={json.dumps(value)}"))


def skip_arguments():
    return shell_words(word for name in SKIP for word in ("--skip", name))


def keep_probs_argument(wildcards):
    """--keep-probs for ensemble members (a params value: a run that becomes a member is re-evaluated)."""
    return "--keep-probs" if run_path(wildcards) in ENSEMBLE_MEMBERS else ""


def shell_words(words):
    """Arguments for a shell command line, each quoted (paths and values may hold spaces or quotes)."""
    return " ".join(shlex.quote(str(word)) for word in words)


def all_metrics():
    return [run_file(path, "metrics.json") for path in sorted(RUNS)]


def all_evaluations():
    return [run_file(path, "ood_shift.json") for path in sorted(RUNS)]


def all_outputs():
    return all_metrics() + TABLES + FIGURES


def aggregate_command(threads):
    """workflow/scripts/aggregate.py over every run of the grid (all must be finished and evaluated)."""
    runs = [str(Path(metrics).parent) for metrics in all_metrics()]
    return shell_words([PYTHON, "workflow/scripts/aggregate.py", "--config", RESOLVED_CONFIG,
                        "--config-sha256", RESOLVED_SHA256, "--threads", threads,
                        "--expected", EXPECTED_VALUES, "--require-eval", "--out", TABLES_DIR, *runs])


def report_table(path):
    """A table's HTML page as a report entry: its caption (written by the aggregation), category and number."""
    name = Path(path).name.removesuffix(".html")
    return report(path, caption=str(Path(f"{TABLES_DIR}/{name}.caption.rst").absolute()),
                  category=report_section.category(name), labels=report_section.labels(name))


def figure_command(name):
    return shell_words([PYTHON, f"paper_figures/{name}.py", "--tables", TABLES_DIR, "--out", FIGURES_DIR])


def finished_runs_only(wildcards):
    """tables_and_figures reads result files only: unfinished runs stop it here, before any job starts."""
    missing = [path for path in all_metrics() + all_evaluations() if not Path(path).exists()]
    if missing:
        raise ValueError(f"tables_and_figures never trains, but {len(missing)} result file(s) of this config "
                         f"are missing, e.g. {', '.join(missing[:3])}; run `snakemake --cores all` to train "
                         f"and evaluate them (or `snakemake runs` for the training runs only)")
    return [RESOLVED_CONFIG, EXPECTED_VALUES]


_check_packages()
_check_finished_runs()


# One workflow instance per results directory: Snakemake's own lock covers only its working directory, so two
# checkouts whose configs name one results_dir would otherwise delete each other's outputs. The instance that
# runs jobs holds RESULTS/workflow.lock (ssvi.locks: flock, dropped by the OS when the process ends) from before
# its first job until it ends; a second one is refused here, before it deletes or schedules anything, naming the
# holder. onstart runs only where jobs will run: not for dry runs (-n), --lint, --list-*, --summary, --dag,
# --report or --unlock, and not in spawned or remote jobs (Snakemake starts those with --no-hooks).
onstart:
    if workflow.is_main_process:
        hold_results_directory(RESULTS, workflow.basedir)


onsuccess:
    release_results_directory()


onerror:
    release_results_directory()
