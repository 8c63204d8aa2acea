"""Result integrity at cluster scale: damaged result files on every path that trusts them, a full disk at the
first checkpoint, a later checkpoint and the final write, Ctrl-C and SIGTERM, one lock for the whole job, and
``threads`` on the evaluation paths.

    python -m pytest tests/test_integrity.py -q

The tests drive the command line and look only at files and exit codes, so they can be run against an
older checkout too (they were: every fault below fails there). The final model is ``model_compact.pt``
(``model.pt`` in older layouts). The full-disk tests run the trainer on a small tmpfs (mounted here as root,
else in a user + mount namespace); where neither works they inject ENOSPC into the writes instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssvi import files as ssvi_files
from ssvi.cli import main

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from results import without_timing  # noqa: E402
TINY = {"method": "dense_vi", "width": 0.125, "image_size": 8, "epochs": 1, "threads": 1, "num_samples": 2,
        "eval_batch_size": 2000}


def train_args(out: Path, **overrides) -> list[str]:
    return ["train", "--out", str(out), "--quiet", *[f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **overrides}.items()]]


def one_error_line(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def final_model(out: Path) -> Path:
    return out / "model_compact.pt" if (out / "model_compact.pt").exists() else out / "model.pt"


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished, evaluated tiny run (copied per test, so each may damage its own copy)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*train_args(out), "--evaluate"]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("run.lock"))
    return copy


def truncate(path: Path, keep: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# damaged result files
# --------------------------------------------------------------------------------------------

def test_truncated_predictions_are_found_by_train_evaluate_status_and_aggregate(run, capsys, tmp_path):
    original = (run / "predictions.pt").read_bytes()
    truncate(run / "predictions.pt")
    for argv in (train_args(run), ["evaluate", "--run", str(run)]):
        line = one_error_line(capsys, argv)
        assert line.startswith(f"ssvi: error: {run / 'predictions.pt'} is damaged (1000 bytes where ")
        assert f"rm {run / 'metrics.json'} {run / 'predictions.pt'}" in line and "without retraining" in line
        assert "snakemake" in line
    assert main(["status", str(run)]) == 1
    assert "damaged" in capsys.readouterr().out
    aggregate = subprocess.run([sys.executable, "workflow/scripts/aggregate.py", "--config", "config/test_dag.yaml",
                                "--out", str(tmp_path / "tables"), "--allow-missing", str(run)], cwd=REPO,
                               capture_output=True, text=True)
    assert aggregate.returncode == 2 and "predictions.pt is damaged" in aggregate.stderr
    assert len(aggregate.stderr.strip().splitlines()) == 1
    # the fix the line names: re-evaluated from the final model, the same predictions, no retraining
    for name in ("metrics.json", "predictions.pt", "subspace.json"):
        (run / name).unlink()
    assert main(train_args(run)) == 0
    assert (run / "predictions.pt").read_bytes() == original
    assert "re-evaluating" in (run / "train.log").read_text()


def test_corrupt_predictions_of_the_same_size_are_found_by_the_full_check(run, capsys):
    flip_bytes(run / "predictions.pt")
    assert main(["status", str(run)]) == 0  # the cheap check sees sizes only
    capsys.readouterr()
    assert main(["status", "--full", str(run)]) == 1
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {run / 'predictions.pt'} is damaged (its SHA256 differs from the one recorded: corrupted)" in out


def test_truncated_final_model_is_found_by_train_and_evaluate(run, capsys):
    model = final_model(run)
    truncate(model)
    for argv in (train_args(run), ["evaluate", "--run", str(run)]):
        line = one_error_line(capsys, argv)
        assert line.startswith(f"ssvi: error: {model} is damaged (")
        assert "retrained from scratch" in line and f"rm {model}" in line


@pytest.mark.parametrize("content", ["", "{not json", '{"method": "dense_vi"}'])
def test_corrupt_metrics_json_is_one_line_on_every_read_path(run, capsys, tmp_path, content):
    metrics = run / "metrics.json"
    metrics.write_text(content)
    for argv in (train_args(run), ["evaluate", "--run", str(run)]):
        line = one_error_line(capsys, argv)
        assert line.startswith(f"ssvi: error: {metrics} is damaged (") and f"rm {metrics}" in line
    aggregate = subprocess.run([sys.executable, "workflow/scripts/aggregate.py", "--config", "config/test_dag.yaml",
                                "--out", str(tmp_path / "tables"), "--allow-missing", str(run)], cwd=REPO,
                               capture_output=True, text=True)
    assert aggregate.returncode == 2, aggregate.stderr
    assert aggregate.stderr.strip().splitlines() == [aggregate.stderr.strip()] and f"{metrics} is damaged" in aggregate.stderr


def test_a_damaged_run_stops_the_snakemake_dag(tmp_path):
    import grid
    import yaml
    config = {"results_dir": str(tmp_path / "results"), "data_dir": "data", "datasets": ["digits"],
              "archs": ["resnet18"], "seeds": [0], "methods": {"dense_vi": [1.0]},
              "run": {k: v for k, v in TINY.items() if k not in ("method",)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "--cores", "1"]
    configfile = ["--configfile", str(path)]  # last: it takes every word after it
    assert subprocess.run([*snakemake, "runs", *configfile], cwd=REPO, capture_output=True).returncode == 0
    run_dir = tmp_path / "results" / "runs" / next(iter(grid.run_grid(config)))
    truncate(run_dir / "predictions.pt")
    dry = subprocess.run([*snakemake, "-n", *configfile], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode != 0 and f"{run_dir / 'predictions.pt'} is damaged" in dry.stdout + dry.stderr


# --------------------------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------------------------

def _mount_tmpfs(directory: Path, size: int) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                            capture_output=True)
    return result.returncode == 0


@contextlib.contextmanager
def small_disk(root: Path, size: int = 16 << 20):
    """A tmpfs of ``size`` bytes at ``root/disk`` (None when mounting is impossible here)."""
    disk = root / "disk"
    mounted = _mount_tmpfs(disk, size)
    try:
        yield disk if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``disk``."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    ballast = disk / "ballast"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return ballast


def inject_enospc(monkeypatch, name: str, nth: int) -> None:
    """Where no tmpfs can be mounted: the nth write of a file called ``name`` fails with ENOSPC."""
    real = ssvi_files.write_bytes
    seen = {"n": 0}

    def write_bytes(path, data):
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] == nth:
                tmp = ssvi_files.temporary_path(Path(path))
                tmp.write_bytes(bytes(data)[: len(data) // 2])  # a partial write, as a full disk leaves one
                tmp.unlink()
                raise ssvi_files.DiskFullError(Path(path))
        return real(path, data)

    monkeypatch.setattr(ssvi_files, "write_bytes", write_bytes)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """The size of a tiny dense VI checkpoint (stopped after epoch 1 of 2 so that one is kept)."""
    from ssvi import trainer
    from ssvi.config import RunConfig
    out = tmp_path_factory.mktemp("size") / "run"
    build = trainer.build_run(RunConfig.from_dict({**TINY, "epochs": 2}))
    build.method.initialize(build.model)
    trainer.train_one_epoch(build)
    build.epoch = 1
    out.mkdir()
    return trainer.save_checkpoint(out / "checkpoint.pt", trainer.run_state(build))["bytes"]


@pytest.mark.parametrize("where, epochs, leave, failing, nth, resumes", [
    ("first checkpoint", 2, 0.5, "checkpoint.pt", 1, "the start (no checkpoint was written yet)"),
    ("later checkpoint", 2, 1.6, "checkpoint.pt", 2, "checkpoint.pt (epoch 1)"),
    ("final write", 1, 1.1, "model_compact.pt", 1, "its final model (model_compact.pt)|checkpoint.pt (epoch 1)"),
])
def test_a_full_disk_is_one_line_leaves_no_temporaries_and_the_run_resumes(
        tmp_path, capsys, monkeypatch, checkpoint_bytes, where, epochs, leave, failing, nth, resumes):
    reference = tmp_path / "reference"
    assert main(train_args(reference, epochs=epochs)) == 0
    with small_disk(tmp_path) as disk:
        out = (disk or tmp_path) / "run"
        if disk is not None:
            ballast = fill(disk, int(leave * checkpoint_bytes))
        else:
            inject_enospc(monkeypatch, failing, nth)
        capsys.readouterr()
        line = one_error_line(capsys, train_args(out, epochs=epochs))
        assert line.startswith("ssvi: error: no space left on the file system mounted at "), line
        assert " while writing " in line and "; free space and re-run: the run resumes from " in line
        assert any(point in line for point in resumes.split("|")), line
        assert temporaries(out) == [] and not (out / "metrics.json").exists()
        if disk is not None:
            ballast.unlink()
        monkeypatch.undo()
        assert main(train_args(out, epochs=epochs)) == 0
        assert temporaries(out) == []
        assert without_timing(json.loads((out / "metrics.json").read_text())) == \
            without_timing(json.loads((reference / "metrics.json").read_text()))


# --------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM
# --------------------------------------------------------------------------------------------



@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interruptions_say_where_the_run_stopped_and_the_rerun_resumes(tmp_path, signum, code):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ssvi", *train_args(out, epochs=40)]
    # SIGINT's default disposition in the child: a background job of a non-interactive shell (nohup, &, some
    # CI runners) starts with SIGINT ignored, which the child would inherit and never see the signal
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted; make it longer"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    lines = stderr.splitlines()
    name = signal.Signals(signum).name
    assert len(lines) == 1 and lines[0].startswith(f"ssvi: interrupted by {name} "), lines
    assert f"of {out}; re-run the same command to resume from {out / 'checkpoint.pt'} (epoch " in lines[0]
    assert (out / "train.log").read_text().splitlines()[-1].endswith(lines[0])
    assert temporaries(out) == []
    status = subprocess.run([sys.executable, "-m", "ssvi", "status", str(out)], cwd=REPO, capture_output=True,
                            text=True)
    assert "stopped" in status.stdout and f"interrupted by {name}" in status.stdout


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_the_sigint_case_passes_when_pytest_itself_starts_with_sigint_ignored(tmp_path):
    # as `nohup python -m pytest &` starts it: the case above must not depend on how pytest was launched
    case = f"{Path(__file__).resolve()}::test_interruptions_say_where_the_run_stopped_and_the_rerun_resumes"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                             str(tmp_path / "inner"), f"{case}[2-130]"], cwd=REPO, capture_output=True, text=True,
                            preexec_fn=ignore_sigint, timeout=600)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


# --------------------------------------------------------------------------------------------
# one lock for the whole job, and threads on the evaluation paths
# --------------------------------------------------------------------------------------------

def test_no_second_process_enters_a_run_while_train_evaluate_evaluates_it(run, monkeypatch):
    from ssvi import shift
    real = shift.evaluate_run
    seen = {}

    def evaluate_with_an_intruder(*args, **kwargs):
        seen["intruder"] = subprocess.run([sys.executable, "-m", "ssvi", "evaluate", "--run", str(run)], cwd=REPO,
                                          capture_output=True, text=True, timeout=120)
        return real(*args, **kwargs)

    monkeypatch.setattr(shift, "evaluate_run", evaluate_with_an_intruder)
    assert main([*train_args(run), "--evaluate"]) == 0
    intruder = seen["intruder"]
    assert intruder.returncode == 2, intruder.stdout + intruder.stderr
    assert intruder.stderr.startswith(f"ssvi: error: {run} is in use by another ssvi process (pid {os.getpid()}")


def test_evaluate_holds_the_lock_too(run, monkeypatch):
    from ssvi import evaluate as evaluation
    real = evaluation.predict
    seen = {}

    def predict_with_an_intruder(*args, **kwargs):
        if "intruder" not in seen:
            seen["intruder"] = subprocess.run([sys.executable, "-m", "ssvi", *train_args(run), "--evaluate"],
                                              cwd=REPO, capture_output=True, text=True, timeout=120)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict", predict_with_an_intruder)
    assert main(["evaluate", "--run", str(run)]) == 0
    assert seen["intruder"].returncode == 2 and "is in use by another ssvi process" in seen["intruder"].stderr


@pytest.mark.parametrize("command", ["evaluate", "train --evaluate"])
def test_the_runs_threads_are_used_on_the_evaluation_paths(run, monkeypatch, command):
    from ssvi import evaluate as evaluation
    real = evaluation.predict
    threads = []

    def counting_predict(*args, **kwargs):
        threads.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict", counting_predict)
    torch.set_num_threads(2)  # torch's default on this machine; the run's config says threads: 1
    argv = ["evaluate", "--run", str(run)] if command == "evaluate" else [*train_args(run), "--evaluate"]
    assert main(argv) == 0
    assert threads and set(threads) == {1}, threads


# --------------------------------------------------------------------------------------------
# whole-file integrity: the training state inside the final model, through a re-evaluation
# --------------------------------------------------------------------------------------------

def flip_training_state_bit(model: Path) -> None:
    """Flip the lowest bit of the pickled float ``train_flops`` of the final model's training state (a value the
    per-tensor checksums do not cover): the file still loads, with FLOPs a hair off."""
    data = bytearray(model.read_bytes())
    key = data.index(b"train_flops")
    value = data.index(b"G", key + len(b"train_flops"))  # pickle's BINFLOAT opcode, then 8 bytes
    data[value + 8] ^= 1
    model.write_bytes(bytes(data))


def test_a_bit_flip_in_the_training_state_is_refused_by_the_reevaluation_and_found_by_verify(run, capsys):
    model = run / "model_compact.pt"
    flip_training_state_bit(model)
    # the re-evaluation path of docs/running.md: delete the three files written from the final model, re-run
    for name in ("metrics.json", "predictions.pt", "subspace.json"):
        (run / name).unlink()
    line = one_error_line(capsys, train_args(run))
    assert line.startswith(f"ssvi: error: {model} is damaged (its SHA256 differs from the one recorded: "
                           "corrupted); delete model_compact.pt"), line
    assert not (run / "metrics.json").exists()  # nothing recorded from the damaged file
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {model} is damaged (its SHA256 differs from the one recorded: corrupted)" in out
    assert "1 damaged file(s)" in out
    assert main(["evaluate", "--run", str(run)]) == 2  # no finished run to evaluate; nothing written
    capsys.readouterr()


def test_evaluate_refuses_a_final_model_whose_training_state_is_damaged(run, capsys):
    flip_training_state_bit(run / "model_compact.pt")
    line = one_error_line(capsys, ["evaluate", "--run", str(run)])
    assert line.startswith(f"ssvi: error: {run / 'model_compact.pt'} is damaged (its SHA256 differs"), line


# --------------------------------------------------------------------------------------------
# ssvi export on damaged, foreign and unwritable runs
# --------------------------------------------------------------------------------------------

def legacy_run(run: Path, into: Path) -> Path:
    """The run as versions before the compact layout kept it: a dense model.pt, no file records."""
    from ssvi.rundir import load_final
    into.mkdir(parents=True)
    state, extra = load_final(run)
    torch.save({"config": extra["config"], "model": state}, into / "model.pt")
    return into


@contextlib.contextmanager
def read_only(directory: Path):
    """``directory`` made unwritable: its own tmpfs remounted read-only (as root, which writes through file
    permissions), or chmod 555 (as another user); None where neither works."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    saved = directory.with_name(directory.name + ".saved")
    directory.rename(saved)
    mounted = _mount_tmpfs(directory, 64 << 20)
    try:
        if mounted:
            shutil.copytree(saved, directory, dirs_exist_ok=True)
            mounted = subprocess.run(["mount", "-o", "remount,ro", str(directory)], capture_output=True).returncode == 0
        yield directory if mounted else None
    finally:
        if mounted or directory.is_mount():
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        saved.rename(directory)


def test_export_of_a_damaged_run_is_one_line(run, capsys, tmp_path):
    flip_training_state_bit(run / "model_compact.pt")
    line = one_error_line(capsys, ["export", "--run", str(run), "--dense", str(tmp_path / "dense.pt")])
    assert line.startswith(f"ssvi: error: {run / 'model_compact.pt'} is damaged (its SHA256 differs"), line
    assert not (tmp_path / "dense.pt").exists()


@pytest.mark.parametrize("content", [b"not a torch file at all" * 10, "torch list"])
def test_export_of_a_foreign_run_is_one_line(capsys, tmp_path, content):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    if content == "torch list":
        torch.save([torch.zeros(3)], foreign / "model.pt")  # some other tool's file
    else:
        (foreign / "model.pt").write_bytes(content)
    line = one_error_line(capsys, ["export", "--run", str(foreign)])
    assert str(foreign / "model.pt") in line and "Traceback" not in line
    assert not (foreign / "model_compact.pt").exists()


def test_export_of_an_unwritable_run_is_one_line(run, capsys, tmp_path, monkeypatch):
    legacy = legacy_run(run, tmp_path / "legacy")
    with read_only(legacy) as directory:
        if directory is None:  # root without mount: the write fails as a read-only file system fails it
            def refused(*args, **kwargs):
                raise OSError(errno.EROFS, "Read-only file system")
            monkeypatch.setattr(ssvi_files, "open", refused, raising=False)
        line = one_error_line(capsys, ["export", "--run", str(legacy)])
        assert line.startswith(f"ssvi: error: cannot write {legacy / 'model_compact.pt'} ("), line
        assert temporaries(legacy) == []


# --------------------------------------------------------------------------------------------
# the aggregation on a full or read-only file system: one line, nothing half-written
# --------------------------------------------------------------------------------------------

def aggregate_into(tables: Path, run: Path) -> list[str]:
    return ["--config", str(REPO / "config" / "test_dag.yaml"), "--out", str(tables), "--allow-missing",
            "--allow-stale", str(run)]


def half_written(tables: Path) -> list[str]:
    return sorted(p.name for p in tables.iterdir() if p.name.endswith(".tmp") or p.stat().st_size == 0)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_the_aggregation_on_a_full_or_read_only_file_system_is_one_line(run, capsys, tmp_path, monkeypatch, fault):
    import aggregate
    first = tmp_path / "first"
    assert aggregate.main(aggregate_into(first, run)) == 0  # the tables as a whole aggregation writes them
    capsys.readouterr()
    with (small_disk(tmp_path, 1 << 20) if fault == "full" else contextlib.nullcontext(tmp_path / "tables")) as disk:
        if fault == "full":
            tables = (disk or tmp_path) / "tables"
            if disk is not None:
                ballast = fill(disk, 24 << 10)  # room for a few of the tables' files, not all of them
            else:
                inject_enospc(monkeypatch, "main.tex", 1)
        else:
            tables = disk
            shutil.copytree(first, tables)  # an earlier aggregation's tables, which must stay whole
        with (read_only(tables) if fault == "read-only" else contextlib.nullcontext(tables)) as directory:
            if directory is None:
                def refused(*args, **kwargs):
                    raise OSError(errno.EROFS, "Read-only file system")
                monkeypatch.setattr(ssvi_files, "open", refused, raising=False)
            assert aggregate.main(aggregate_into(tables, run)) == 2
            errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
            assert len(errors) == 1 and "Traceback" not in errors[0], errors
            if fault == "full":
                assert errors[0].startswith("aggregate: error: no space left on the file system mounted at "), errors
                assert errors[0].endswith("; free space and re-run: the aggregation writes every table again")
            else:
                assert errors[0].startswith(f"aggregate: error: cannot write {tables}/"), errors
                assert sorted(p.name for p in tables.iterdir()) == sorted(p.name for p in first.iterdir())
                assert all((tables / p.name).read_bytes() == p.read_bytes() for p in first.iterdir())
            assert half_written(tables) == []
        if fault == "full" and disk is not None:
            ballast.unlink()
