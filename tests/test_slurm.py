"""SLURM integration test: every training run of config/test_slurm.yaml goes through a real SLURM.

It starts a real single-node SLURM cluster (.ci/slurm-cluster.sh: munged, MariaDB + slurmdbd for
accounting, slurmctld, slurmd, one fake GPU), runs the workflow exactly as a user at a SLURM site
would (`snakemake --profile slurm`, partition and account from SSVI_SLURM_PARTITION /
SSVI_SLURM_ACCOUNT), then checks with `sacct` that each training run was one SLURM job that
COMPLETED on the partition and account from the environment with a GPU allocated, and that every
run's metrics.json is complete. The daemons it started are stopped by PID afterwards, pass or fail.

Needs root on Debian (apt packages, system daemons); skipped elsewhere. About 2-3 min on 2 cores.
The profile's own checks (site values from the environment, refused when unset) are dry runs that
need no cluster and run everywhere.

    .venv/bin/python -m pytest tests/test_slurm.py -q -s
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402

CLUSTER = REPO / ".ci" / "slurm-cluster.sh"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CONFIG = "config/test_slurm.yaml"
PARTITION, ACCOUNT = "debug", "ci"  # what .ci/slurm-cluster.sh creates
SNAKEMAKE_TIMEOUT_S = 900  # ~2 min when the machine is idle; generous for busy 2-core CI machines
SACCT_FIELDS = ["JobID", "JobName", "State", "ExitCode", "Partition", "Account", "AllocTRES", "Elapsed", "Comment"]
METRIC_KEYS = ["method", "dataset", "arch", "seed", "density", "acc", "nll", "ece", "brier", "train_flops",
               "train_flops_this_run", "test_flops", "dense_test_flops", "layer_densities", "config"]



def _os_id() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return ""
    return fields.get("ID", "").strip('"')


def _run(cmd, timeout_s, **kwargs) -> subprocess.CompletedProcess:
    """Run a command bounded by coreutils `timeout` (and a Python timeout behind it), output captured."""
    cmd = ["timeout", "-k", "30", str(timeout_s), *map(str, cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 60, **kwargs)


def _show(title: str, text: str, lines: int = 80) -> str:
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n----- {title} (last {lines} lines) -----\n{tail}\n"


@pytest.fixture
def slurm_cluster(tmp_path):
    """A running SLURM cluster with accounting and one fake GPU; stops the daemons it started (by PID)."""
    if _os_id() != "debian":
        pytest.skip("SLURM integration test needs Debian (it installs Debian's slurm-wlm packages with apt)")
    if os.geteuid() != 0:
        pytest.skip("SLURM integration test needs root (it installs packages and starts system daemons)")
    env = {**os.environ, "SLURM_CI_FAKE_GPU": "1", "SLURM_CI_ACCOUNTING": "1",
           # our own PID records: `stop` then stops exactly the daemons this test started, nothing else
           "SLURM_CI_STATE": str(tmp_path / "slurm-ci-state")}
    install = _run(["bash", CLUSTER, "install"], 900, env=env)
    assert install.returncode == 0, "cluster install failed" + _show("install", install.stdout + install.stderr)
    try:
        start = _run(["bash", CLUSTER, "start"], 300, env=env)
        assert start.returncode == 0, "cluster start failed" + _show("start", start.stdout + start.stderr)
        yield env
    finally:
        stop = _run(["bash", CLUSTER, "stop"], 300, env=env)
        print(stop.stderr.strip())
        assert stop.returncode == 0, "cluster stop failed" + _show("stop", stop.stdout + stop.stderr)


def _cluster_logs() -> str:
    logs = _run(["bash", CLUSTER, "logs"], 60)
    return _show("SLURM daemon logs", logs.stdout + logs.stderr, 60)


def _sacct(run_id: str, since: str) -> list[dict]:
    """Allocation lines (-X) of the jobs submitted by one Snakemake run (job name = its SLURM run ID)."""
    out = _run(["sacct", "-n", "-P", "-X", "-S", since, "--name", run_id, "--format", ",".join(SACCT_FIELDS)], 60)
    assert out.returncode == 0, f"sacct failed: {out.stderr}"
    return [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def _cancel_leftovers(run_id: str | None) -> None:
    """After a killed Snakemake: cancel its jobs still queued or running (by job name), wait until gone."""
    if run_id is None:
        return
    _run(["scancel", "--name", run_id], 60)
    for _ in range(60):
        queue = _run(["squeue", "-h", "--name", run_id, "-o", "%i"], 30)
        if queue.returncode != 0 or not queue.stdout.strip():
            return
        time.sleep(1)


def _remove_own_locks(results: Path) -> None:
    """A killed Snakemake leaves .snakemake/locks behind. Not `snakemake --unlock`: in the shared repo root
    that would also drop the locks of other Snakemake runs; remove only lock files naming our paths."""
    for lock in (REPO / ".snakemake" / "locks").glob("*.lock"):
        try:
            if str(results) in lock.read_text():
                lock.unlink()
        except OSError:
            pass


def _wildcards(run: grid.RunSpec) -> str:
    """How the plugin names a run in the job comment: rule_train_wildcards_<wildcard values joined by _>."""
    return "_".join([run.dataset, run.arch, run.method, run.variant, f"{run.density:g}", str(run.seed)])


def _profile_dry_run(env_changes: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SSVI_SLURM_") and key != "SNAKEMAKE_PROFILE"}
    env.update(env_changes)
    return _run([SNAKEMAKE, "--profile", "slurm", "runs", "-n", "--configfile", CONFIG,
                 "--config", f"results_dir={tmp_path / 'results'}"], 300, cwd=REPO, env=env)


@pytest.mark.parametrize("unset", ["SSVI_SLURM_PARTITION", "SSVI_SLURM_ACCOUNT"])
def test_profile_refuses_to_run_without_its_site_variables(unset, tmp_path):
    values = {"SSVI_SLURM_PARTITION": PARTITION, "SSVI_SLURM_ACCOUNT": ACCOUNT}
    del values[unset]
    result = _profile_dry_run(values, tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"slurm profile: the environment variable {unset} is not set" in text
    assert f"${unset}" not in text and "rule train" not in text  # stopped before any job was planned


def test_profile_takes_partition_and_account_from_the_environment(tmp_path):
    result = _profile_dry_run({"SSVI_SLURM_PARTITION": "all", "SSVI_SLURM_ACCOUNT": "my_project"}, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # `all` is a Python builtin: the value must still arrive as the plain string
    assert "slurm_partition=all, slurm_account=my_project" in result.stdout


@pytest.mark.slow
def test_every_training_run_is_a_completed_slurm_job(slurm_cluster, tmp_path, capsys):
    results = tmp_path / "results"  # fresh: no stale lock or incomplete marker from an earlier run
    config = {**yaml.safe_load((REPO / CONFIG).read_text()), "results_dir": str(results)}
    runs = grid.run_grid(config)
    assert len(runs) == 3  # dense_vi, ssvi, posthoc (which needs dense_vi: two waves of jobs)

    # the way a site runs it: partition and account exported, the profile reads them
    env = {**os.environ, "SSVI_SLURM_PARTITION": PARTITION, "SSVI_SLURM_ACCOUNT": ACCOUNT}
    env.pop("SSVI_SLURM_GPU_MODEL", None)  # the fake GPU has no type
    env.pop("SNAKEMAKE_PROFILE", None)
    since = (datetime.now() - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    # targets before --config (it takes every following word); the poll interval is shortened for CI
    cmd = [SNAKEMAKE, "--profile", "slurm", "runs", "--slurm-init-seconds-before-status-checks", "5",
           "--configfile", CONFIG, "--config", f"results_dir={results}"]
    t0 = time.monotonic()
    run_id = None
    try:
        proc = _run(cmd, SNAKEMAKE_TIMEOUT_S, cwd=REPO, env=env)
        log = proc.stdout + proc.stderr
        match = re.search(r"SLURM run ID: (\S+)", log)
        run_id = match.group(1) if match else None
        jobs = _sacct(run_id, since) if run_id else []
        with capsys.disabled():  # shown in CI output even without -s
            print(f"\n[test_slurm] snakemake --profile slurm: exit {proc.returncode} after "
                  f"{time.monotonic() - t0:.0f} s, SLURM run ID {run_id}")
            print("[test_slurm] sacct -X " + "|".join(SACCT_FIELDS))
            for job in jobs:
                print("[test_slurm]   " + "|".join(job[f] for f in SACCT_FIELDS))
        # `timeout` exits 124 after TERM; after its KILL (-k) it is killed too: 137 or -9 here
        timed_out = proc.returncode in (124, 137) or proc.returncode < 0
        failure = _show("snakemake", log) + _cluster_logs() if proc.returncode else ""
        assert not timed_out, f"snakemake killed after {SNAKEMAKE_TIMEOUT_S} s" + failure
        assert proc.returncode == 0, f"snakemake failed ({proc.returncode})" + failure
        assert run_id, "no 'SLURM run ID' in snakemake output: did it use the slurm executor?" + _show("snakemake", log)
        assert "has been submitted with SLURM jobid" in log
    finally:
        _cancel_leftovers(run_id)
        _remove_own_locks(results)

    # every training run is exactly one SLURM job, and it completed where the environment said
    assert len(jobs) == len(runs), f"{len(jobs)} SLURM jobs for {len(runs)} training runs: {jobs}"
    comments = sorted(job["Comment"] for job in jobs)
    assert comments == sorted(f"rule_train_wildcards_{_wildcards(run)}" for run in runs.values())
    for job in jobs:
        assert job["State"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert (job["Partition"], job["Account"]) == (PARTITION, ACCOUNT), job
        assert "gres/gpu=1" in job["AllocTRES"], f"the job got no GPU: {job}"

    # every run finished with complete metrics
    for path, run in runs.items():
        metrics_file = results / "runs" / path / "metrics.json"
        assert metrics_file.is_file(), f"missing {metrics_file}"
        metrics = json.loads(metrics_file.read_text())
        missing = [key for key in METRIC_KEYS if key not in metrics]
        assert not missing, f"{path}: metrics.json lacks {missing}"
        assert (metrics["method"], metrics["dataset"], metrics["arch"], metrics["seed"]) == \
            (run.method, run.dataset, run.arch, run.seed)
        assert 0.0 <= metrics["acc"] <= 1.0
        for key in ("nll", "ece", "brier", "train_flops", "test_flops", "dense_test_flops"):
            assert math.isfinite(metrics[key]) and metrics[key] >= 0, (path, key, metrics[key])
        assert metrics["train_flops"] > 0 and metrics["test_flops"] > 0
        assert metrics["config"]["image_size"] == config["run"]["image_size"]  # the test config, not the demo's
