"""Results that survive sharing: two workflow instances (two checkouts) on one results directory, and a results
directory copied to another path. Real Snakemake processes on tiny digits runs (slow: about two minutes).

    .venv/bin/python -m pytest tests/test_sharing.py -q
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
RUN = {"width": 0.125, "image_size": 8, "epochs": 1, "num_samples": 2, "eval_batch_size": 2000, "threads": 1}
# two dense_vi runs on digits, and one ensemble of the two (from their stored predictions)
CONFIG = {"data_dir": "data", "datasets": ["digits"], "archs": ["resnet18"], "seeds": [0],
          "methods": {"dense_vi": [1.0]}, "ensembles": [{"method": "dense_vi", "groups": [[0, 1]]}], "run": RUN}
RUN_DIR = "runs/digits/resnet18/dense_vi/default/d1/seed0"

# A test hook loaded as an extra baseline file (SSVI_EXTRA_BASELINES) into the first instance's job: its OOD /
# shift evaluation waits, after metrics.json is written, until the test removes the gate file.
GATE_PLUGIN = '''
import os, time
from pathlib import Path
import ssvi.shift

_evaluate_run = ssvi.shift.evaluate_run

def _gated(*args, **kwargs):
    gate = Path(os.environ["SSVI_TEST_GATE"])
    (gate.parent / "evaluating").touch()
    while gate.exists():
        time.sleep(0.1)
    return _evaluate_run(*args, **kwargs)

ssvi.shift.evaluate_run = _gated
'''


def write_config(path: Path, results: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({"results_dir": str(results), **CONFIG, **changes}))
    return path


def second_checkout(root: Path) -> Path:
    """Another checkout of this repository (links to its files; Snakemake's own lock lives in its own working
    directory, as it would for a second clone)."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".snakemake", ".git", "results", ".venv", ".pytest_cache"):
            (root / entry.name).symlink_to(entry)
    (root / "results").mkdir()
    (root / "results" / "expected").symlink_to(REPO / "results" / "expected")
    return root


def wait_for(path: Path, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, f"the first instance ended early: {process.communicate()}"
        assert time.time() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_instance_on_a_results_directory_in_use_is_refused_naming_the_holder(tmp_path):
    results = tmp_path / "shared_results"
    config = {"seeds": [0], "ensembles": None}
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "gate.py").write_text(GATE_PLUGIN)
    gate = tmp_path / "gate"
    gate.write_text("")
    env = {**os.environ, "SSVI_EXTRA_BASELINES": str(plugins), "SSVI_TEST_GATE": str(gate)}
    first = subprocess.Popen([SNAKEMAKE, "runs", "--cores", "1", "--configfile",
                              str(write_config(tmp_path / "first.yaml", results, **config))],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(tmp_path / "evaluating", first, 600)  # the first instance's job is evaluating its run
        metrics = results / RUN_DIR / "metrics.json"
        assert metrics.exists()
        checkout = second_checkout(tmp_path / "checkout2")
        # its default target needs the run's ood_shift.json, which the first instance's job is about to write
        second = subprocess.run([SNAKEMAKE, "--cores", "1", "--configfile",
                                 str(write_config(tmp_path / "second.yaml", results, **config))],
                                cwd=checkout, capture_output=True, text=True, timeout=600)
        text = second.stdout + second.stderr
        assert second.returncode != 0, text[-3000:]
        refusal = [line for line in text.splitlines() if "is in use by another workflow instance" in line]
        assert len(refusal) == 1, text[-3000:]
        assert f"the results directory {results} is in use by another workflow instance (pid {first.pid} on " \
               f"{socket.gethostname()}, snakemake of the checkout {REPO} " in refusal[0]
        assert "rule train" not in text  # nothing scheduled
        assert metrics.exists() and first.poll() is None  # nothing deleted; the first still evaluates
    finally:
        gate.unlink(missing_ok=True)
        output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-3000:]
    assert (results / RUN_DIR / "metrics.json").exists() and (results / RUN_DIR / "ood_shift.json").exists()
    # the lock went with the first instance: the second now finds nothing to do
    again = subprocess.run([SNAKEMAKE, "runs", "--cores", "1", "--configfile", str(tmp_path / "second.yaml")],
                           cwd=checkout, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_a_copied_results_directory_gives_the_same_tables_ensembles_included(tmp_path):
    results = tmp_path / "results"
    tables = ["main.csv"]
    made = subprocess.run([SNAKEMAKE, "runs", str(results / "tables" / tables[0]), "--cores", "2", "--configfile",
                           str(write_config(tmp_path / "config.yaml", results))],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    original = (results / "tables" / "main.csv").read_text()
    assert "dense_vi ×2 (d 1 each)" in original  # the ensemble row
    copy = tmp_path / "moved" / "results"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(results), str(copy)], check=True)
    for table in (copy / "tables").iterdir():
        if table.suffix in (".csv", ".md", ".tex", ".json") and table.name != "workflow_config.json":
            table.unlink()
    config = write_config(tmp_path / "moved.yaml", copy)
    again = subprocess.run([SNAKEMAKE, str(copy / "tables" / "main.csv"), "--cores", "1", "--configfile",
                            str(config)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "rule train" not in again.stdout + again.stderr
    for table in sorted((results / "tables").glob("*.*")):
        if table.name not in ("runs.csv", "workflow_config.json") and table.suffix in (".csv", ".md", ".tex"):
            assert (copy / "tables" / table.name).read_text() == table.read_text(), table.name
    assert "not every member" not in (copy / "tables" / "main.md").read_text()
    # a resolved config that is not the current one (Snakemake has no record of the copy's to rerun it) is refused
    # in one line instead of deciding the tables
    (copy / "tables" / "main.csv").unlink()
    changed = write_config(tmp_path / "changed.yaml", copy, claims={"acc_drop_points": 5.0})
    refused = subprocess.run([SNAKEMAKE, str(copy / "tables" / "main.csv"), "--cores", "1", "--configfile",
                              str(changed)], cwd=REPO, capture_output=True, text=True, timeout=600)
    log = (copy / "logs" / "aggregate.log").read_text()
    assert refused.returncode != 0
    assert log.strip().splitlines()[-1] == (
        f"aggregate: error: {copy / 'tables' / 'workflow_config.json'} is not this workflow's current config "
        "(written for another config); regenerate it: delete it, or add --forcerun resolved_config to the "
        "snakemake command")
    assert json.loads((copy / "tables" / "workflow_config.json").read_text()).get("results_dir") is None
