"""The Snakemake DAG: lint, schema validation, the paper grid (dry run), rerun triggers, quoting, the
tables-only target, and a small end-to-end run (slow).

    .venv/bin/python -m pytest tests/test_workflow.py -q [-m "not slow"]
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402
from ssvi.files import write_bytes  # noqa: E402
from ssvi.rundir import check_finished  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def snakemake(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    command = ["timeout", "-k", "30", str(timeout), SNAKEMAKE, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


# one dense_vi run on digits: the smallest DAG (verify_data, train with evaluation, tables, figures)
ONE_RUN = {"data_dir": "data", "datasets": ["digits"], "archs": ["resnet18"], "seeds": [0],
           "methods": {"dense_vi": [1.0]}, "run": {"width": 0.125, "image_size": 8, "epochs": 2, "num_samples": 2}}


def write_config(tmp_path: Path, config: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), **config}))
    return path


def shell_commands(output: str) -> list[list[str]]:
    """The shell commands a `snakemake -n -p` printed, split as the shell would split them."""
    return [shlex.split(line.split(":", 1)[1]) for line in output.splitlines() if line.startswith("Shell command:")]


def mark_finished(tmp_path: Path, config_path: Path, config: dict) -> None:
    """Pretend every training run (and its data check) ran: empty outputs, then `--touch` records them in
    Snakemake's metadata with the current params, as a real run would."""
    results = tmp_path / "results"
    (results / "data").mkdir(parents=True, exist_ok=True)
    (results / "data" / "digits.json").write_text("{}")
    for path, spec in grid.run_grid({**config, "results_dir": str(results)}).items():
        run_dir = results / "runs" / path
        run_dir.mkdir(parents=True, exist_ok=True)
        # a whole finished run as far as the DAG's check of result files goes: metrics.json with its keys and
        # the recorded final model (a placeholder)
        record = write_bytes(run_dir / "model_compact.pt", b"placeholder")
        (run_dir / "metrics.json").write_text(json.dumps({
            "method": spec.method, "dataset": spec.dataset, "arch": spec.arch, "seed": spec.seed, "config": {},
            "acc": 0.0, "files": {"model_compact.pt": record}}))
    touched = snakemake("runs", "--touch", "--forceall", "--cores", "1", "--configfile", str(config_path))
    assert touched.returncode == 0, touched.stderr[-3000:]


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
    ({"evaluation": {"skip": ["imagenet_c"]}}, "skip"),
    ({"evaluation": {"skipped": ["svhn"]}}, "skipped"),
    ({"schedule_ablation": {"dataset": "digits", "arch": "resnet18", "density": 0.1, "delta_t": [0],
                            "alpha": [0.3]}}, "delta_t"),
    ({"schedule_ablation": {"dataset": "digits", "arch": "resnet18", "density": 0.1, "delta_t": [10],
                            "alpha": [1.5]}}, "alpha"),
    ({"arch_seeds": {"vgg16": [-1]}}, "arch_seeds"),
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


def test_paper_grid_dry_run_lists_every_run_once_with_posthoc_edges_and_verifies_evaluation_data():
    config = load("paper.yaml")
    expected = grid.run_grid(config)
    # the paper grid: 2 datasets x 2 archs x 3 seeds x (1 dense + 3 densities x (3 methods + 2 posthoc variants)
    # + 3 densities of deterministic_sparse + the cheap Bayesian alternatives: the dense deterministic network,
    # Laplace on it and at 3 densities, IVON dense and at 0.1, MC dropout, sparse VD) + criteria ablation (5 extra)
    # + robustness (15 extra cells x 2 methods) + schedule ablation (5 delta_t x 3 alpha - the recipe's own) on
    # cifar10/resnet18, x 3 seeds + the ensembles' extra members per dataset x arch: seeds 3-5 of ssvi 0.05, static
    # 0.05 and dense VI, and seeds 0-5 of ssvi 0.025
    alternatives = 1 + 4 + 2 + 1 + 1
    assert len(expected) == (2 * 2 * 3 * (1 + 3 * 5 + 3 + alternatives) + 3 * (5 + 2 * 15 + 14)
                             + 2 * 2 * (3 * 3 + 6))
    result = snakemake("-n", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    jobs = re.findall(r"rule train:\n\s+input: (.*)\n\s+output: results/runs/(.*)/metrics.json, "
                      r"results/runs/\2/ood_shift.json", text)
    assert sorted(path for _, path in jobs) == sorted(expected)  # every run exactly once
    posthoc = [(inputs, path) for inputs, path in jobs if expected[path].method == "posthoc"]
    assert posthoc
    for inputs, path in posthoc:  # a real DAG edge to the dense_vi run of the same dataset, arch and seed
        run = expected[path]
        source = grid.dense_source(config, run.dataset, run.arch, run.seed).path
        assert f"results/runs/{source}/metrics.json" in inputs.split(", ")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, re.M))
    assert int(counts["train"]) == len(expected) and "evaluate" not in counts  # evaluated in the train job
    # the README's promise: CIFAR-10/100 and the OOD and shift sets are verified before any job starts
    verified = re.findall(r"output: results/data/(\w+)\.json", text)
    assert sorted(verified) == ["cifar10", "cifar100", "cifar10c", "svhn"]


def test_skipped_evaluation_sets_are_neither_verified_nor_evaluated(tmp_path):
    config = {**load("paper.yaml"), "datasets": ["cifar10"], "archs": ["resnet18"], "seeds": [0],
              "methods": {"dense_vi": [1.0]}, "criteria_ablation": None, "robustness": None,
              "schedule_ablation": None, "ensembles": None, "evaluation": {"skip": ["cifar10c", "svhn"]}}
    result = snakemake("-n", "-p", "--configfile", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert sorted(re.findall(r"output: \S+/data/(\w+)\.json", text)) == ["cifar10", "cifar100"]
    [train] = [c for c in shell_commands(result.stdout) if c[1:4] == ["-m", "ssvi", "train"]]
    assert "--evaluate" in train
    assert train[train.index("--skip") + 1] == "cifar10c" and train.count("--skip") == 2


def test_changed_run_config_retrains_but_environment_keys_do_not(tmp_path):
    config_path = write_config(tmp_path, ONE_RUN)
    mark_finished(tmp_path, config_path, ONE_RUN)
    assert "Nothing to be done" in snakemake("runs", "-n", "--configfile", str(config_path)).stdout
    # `run: epochs` 2 -> 6: the 2-epoch result must not stand for the 6-epoch recipe
    changed = write_config(tmp_path, {**ONE_RUN, "run": {**ONE_RUN["run"], "epochs": 6}})
    result = snakemake("runs", "-n", "-p", "--configfile", str(changed))
    assert result.returncode == 0, result.stderr
    assert re.search(r"rule train:(.|\n)*?reason: Params have changed", result.stdout), result.stdout[-3000:]
    [train] = [c for c in shell_commands(result.stdout) if c[1:4] == ["-m", "ssvi", "train"]]
    assert "--restart-on-config-change" in train and "epochs=6" in train
    # environment keys: where the data are and how many threads, not what is computed
    moved = write_config(tmp_path, {**ONE_RUN, "data_dir": "elsewhere", "resources": {"threads": 2},
                                    "run": {**ONE_RUN["run"], "threads": 2}})
    result = snakemake("runs", "-n", "--configfile", str(moved))
    assert result.returncode == 0, result.stderr
    assert "rule train:" not in result.stdout, result.stdout[-3000:]


def test_shell_arguments_survive_quotes_and_spaces(tmp_path):
    data_dir = str(tmp_path / "it's my data")
    config = {**ONE_RUN, "data_dir": data_dir, "methods": {"posthoc": [0.1]}, "posthoc_finetune_epochs": [0]}
    path = tmp_path / "o'neil results"
    path.mkdir()
    result = snakemake("-n", "-p", "--configfile", str(write_config(path, config)))
    assert result.returncode == 0, result.stderr
    commands = shell_commands(result.stdout)  # shlex.split raises on a broken quote
    trains = [c for c in commands if c[1:4] == ["-m", "ssvi", "train"]]
    assert len(trains) == 2
    for train in trains:
        assert f"data_dir={json.dumps(data_dir)}" in train
        assert train[train.index("--out") + 1].startswith(str(path / "results" / "runs"))
    posthoc = next(c for c in trains if "method=\"posthoc\"" in c)
    source = path / "results" / "runs" / "digits/resnet18/dense_vi/default/d1/seed0"
    assert f"init_from={json.dumps(str(source))}" in posthoc
    for command in commands:
        if "--data-dir" in command:
            assert command[command.index("--data-dir") + 1] == data_dir


def test_tables_and_figures_never_schedules_training(tmp_path):
    result = snakemake("tables_and_figures", "-n", "--configfile", str(write_config(tmp_path, ONE_RUN)))
    text = result.stdout + result.stderr
    assert "rule train:" not in text
    assert result.returncode != 0
    assert "tables_and_figures never trains, but 2 result file(s) of this config are missing" in text
    assert "digits/resnet18/dense_vi/default/d1/seed0/metrics.json" in text


def test_exponent_numbers_in_a_workflow_config_are_numbers(tmp_path):
    # PyYAML (and so Snakemake) reads 1e-3 as the string "1e-3"; the workflow accepts it as a number
    path = tmp_path / "exp.yaml"
    path.write_text(f"results_dir: {tmp_path / 'results'}\n" + """datasets: [digits]
archs: [resnet18]
seeds: [0]
methods: {ssvi: [1e-1]}
run: {width: 0.125, image_size: 8, epochs: 2, num_samples: 2, lr: 1e-3, delta_t: 4}
robustness: {dataset: digits, arch: resnet18, density: 1e-1, methods: [ssvi], sigma_init: [1e-2], kl_scale: [1e-2]}
""")
    result = snakemake("runs", "-n", "-p", "--configfile", str(path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trains = [c for c in shell_commands(result.stdout) if c[1:4] == ["-m", "ssvi", "train"]]
    assert sorted(c[c.index("--out") + 1].split("/runs/")[1] for c in trains) == [
        "digits/resnet18/ssvi/default/d0.1/seed0", "digits/resnet18/ssvi/sigma0.01-kl0.01/d0.1/seed0"]
    assert all("lr=0.001" in c for c in trains)


def test_duplicate_keys_in_a_workflow_config_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(f"results_dir: {tmp_path / 'results'}\n" + """datasets: [digits]
archs: [resnet18]
seeds: [0]
methods: {dense_vi: [1.0]}
run:
  epochs: 2
  width: 0.125
  epochs: 20
""")
    result = snakemake("runs", "-n", "--configfile", str(path))
    assert result.returncode != 0
    assert f"config file {path}: key 'epochs' appears twice (lines 7 and 9)" in result.stdout + result.stderr


def test_unknown_timm_model_stops_the_dag_before_any_job(tmp_path):
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, {**ONE_RUN, "archs": ["timm/doesnotexist"]})))
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "config error in run digits/timm/doesnotexist/dense_vi/default/d1/seed0" in text
    assert "timm/doesnotexist" in text and "rule train" not in text


@pytest.mark.slow
def test_end_to_end_dag_and_regeneration(tmp_path):
    config = load("test_dag.yaml")
    out = tmp_path / "results"
    run = snakemake("--cores", "2", "--configfile", "config/test_dag.yaml", "--config", f"results_dir={out}",
                    timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    members = grid.ensemble_members(config)
    assert members
    for path in grid.run_grid(config):
        run_dir = out / "runs" / path
        metrics = check_finished(run_dir, full=True)  # every recorded result file whole
        assert {"acc", "nll", "ece", "ace", "ece_ssvi", "brier", "aurc", "temperature_scaled", "train_flops"} <= set(metrics)
        assert (run_dir / "ood_shift.json").exists()
        # finished runs keep the compact final model only: no checkpoint, no dense model.pt
        assert (run_dir / "model_compact.pt").exists() and not (run_dir / "checkpoint.pt").exists()
        assert not (run_dir / "model.pt").exists()
        assert (run_dir / "eval_probs.pt").exists() == (path in members)  # kept for ensembles only
    for name in ("main", "calibrated", "claims", "undecided", "ood", "shift", "criteria", "robustness",
                 "schedule_ablation", "iou_end", "reliability", "risk_coverage"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    main = (out / "tables" / "main.csv").read_text()
    assert "deterministic_sparse" in main and "ssvi ×2 (d 0.1 each)" in main
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(figures) == 11 and all((out / "figures" / f.replace(".png", ".pdf")).exists() for f in figures)
    # regenerating tables and figures never retrains: only aggregation and figure jobs run
    for table in (out / "tables").glob("*"):
        table.unlink()
    regenerate = snakemake("tables_and_figures", "--cores", "2", "--configfile", "config/test_dag.yaml",
                           "--config", f"results_dir={out}", timeout=300)
    assert regenerate.returncode == 0, regenerate.stderr[-3000:]
    jobs = set(re.findall(r"rule (\w+):", regenerate.stdout + regenerate.stderr))
    assert jobs and "train" not in jobs, jobs
    assert (out / "tables" / "main.md").exists()


def test_the_aggregation_declares_every_file_it_writes(tmp_path):
    # runs.csv and claims.json are outputs of the aggregate rule (a failed aggregation leaves none stale)
    tables = tmp_path / "results" / "tables"
    config = write_config(tmp_path, ONE_RUN)
    result = snakemake("-n", str(tables / "runs.csv"), str(tables / "claims.json"), "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rule aggregate:" in result.stdout + result.stderr


def test_an_ensemble_entry_without_density_is_one_line(tmp_path):
    from ssvi.config import ConfigError
    config = {**ONE_RUN, "ensembles": [{"method": "ssvi", "groups": [[0, 1]]}]}
    message = ("ensembles entry ssvi has no density: give each member's density (e.g. density: 0.05); only the dense "
               "methods' ensembles (dense_vi, deterministic, mc_dropout, sparse_vd) go without one")
    with pytest.raises(ConfigError, match=re.escape(message)):
        grid.run_grid(config)
    path = write_config(tmp_path, config)
    result = snakemake("-n", "--configfile", str(path))
    text = result.stdout + result.stderr
    assert result.returncode != 0 and message in text.splitlines(), text[-3000:]
    assert "KeyError" not in text and "rule train" not in text
    result = subprocess.run([sys.executable, "-m", "ssvi", "status", "--config", str(path)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.splitlines() == [f"ssvi: error: {message}"], result.stderr
    # dense_vi needs none: its members are dense
    assert len(grid.run_grid({**ONE_RUN, "ensembles": [{"method": "dense_vi", "groups": [[0, 1]]}]})) == 2


BLOCK_IMPORT = '''
import sys

class BlockImport:
    """This environment as if the package {name} were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "{name}":
            raise ModuleNotFoundError("No module named '{name}'", name=name)
        return None

sys.meta_path.insert(0, BlockImport())
'''

NEEDS_A_PACKAGE = '''
from ssvi.methods import Method, register_method


@register_method("needs_a_package")
class NeedsAPackage(Method):
    """Dense VI that needs a package this environment does not have."""
    required_packages = ("ssvi_test_package_not_installed",)
'''


@pytest.mark.parametrize("setting", ["tensorboard", "required_packages"])
def test_optional_packages_are_checked_at_dag_build(tmp_path, setting):
    env = dict(os.environ)
    if setting == "tensorboard":
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text(BLOCK_IMPORT.replace("{name}", "tensorboard"))
        env["PYTHONPATH"] = str(blocker)
        config = {**ONE_RUN, "run": {**ONE_RUN["run"], "tensorboard": True}}
        expected = "tensorboard: true needs the Python package 'tensorboard', which is not installed for "
    else:
        plugins = tmp_path / "plugins"
        plugins.mkdir()
        (plugins / "needs_a_package.py").write_text(NEEDS_A_PACKAGE)
        env["SSVI_EXTRA_BASELINES"] = str(plugins)
        config = {**ONE_RUN, "methods": {"needs_a_package": [1.0]}}
        expected = ("method: needs_a_package needs the Python package 'ssvi_test_package_not_installed', which is "
                    "not installed for ")
    result = subprocess.run(["timeout", "300", SNAKEMAKE, "-n", "--configfile", str(write_config(tmp_path, config))],
                            cwd=REPO, capture_output=True, text=True, env=env)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-3000:]
    [line] = [line for line in text.splitlines() if expected in line]
    assert "(run digits/resnet18/" in line and line.endswith("install it into this environment (pip install "
                                                              "<package>), or change the setting")
    assert "rule train" not in text


def test_a_methods_entry_with_options_runs_each_value_and_a_key_the_method_does_not_read_stops_the_dag(tmp_path):
    config = {**ONE_RUN, "methods": {"posthoc": [{"densities": [0.1], "extra": {"bn_reestimation": [True, False]}}]},
              "posthoc_finetune_epochs": [0]}
    result = snakemake("runs", "-n", "-p", "--configfile", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trains = {c[c.index("--out") + 1].split("/runs/")[1]: c for c in shell_commands(result.stdout)
              if c[1:4] == ["-m", "ssvi", "train"]}
    assert sorted(trains) == ["digits/resnet18/dense_vi/default/d1/seed0",
                              "digits/resnet18/posthoc/ft0+bn_reestimationfalse/d0.1/seed0",
                              "digits/resnet18/posthoc/ft0+bn_reestimationtrue/d0.1/seed0"]
    assert 'extra={"bn_reestimation": false}' in trains["digits/resnet18/posthoc/ft0+bn_reestimationfalse/d0.1/seed0"]
    refused = {**ONE_RUN, "methods": {"dense_vi": {"densities": [1.0], "extra": {"kl_factor": [0.5, 2.0]}}}}
    result = snakemake("runs", "-n", "--configfile", str(write_config(tmp_path, refused, "refused.yaml")))
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "rule train" not in text
    assert "config error in run digits/resnet18/dense_vi/default+kl_factor0.5/d1/seed0: extra key(s) 'kl_factor' " \
           "are not read by method 'dense_vi'" in text
