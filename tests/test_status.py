"""``ssvi status`` and ``ssvi verify``: one line per run of a workflow config's grid or a results folder, the
counts at the top, ``--failed``, the exit status; and TensorBoard scalars of the run option ``tensorboard``.

    python -m pytest tests/test_status.py -q
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from ssvi import trainer
from ssvi.cli import main
from ssvi.config import RunConfig
from ssvi.rundir import run_directory_lock, write_progress
from ssvi.status import run_status

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402

RUN = {"method": "dense_vi", "width": 0.125, "image_size": 8, "epochs": 1, "threads": 1, "num_samples": 2,
       "eval_batch_size": 2000}
CONFIG = {"data_dir": "data", "datasets": ["digits"], "archs": ["resnet18"], "seeds": [0, 1],
          "methods": {"dense_vi": [1.0], "ssvi": [0.1]},
          "run": {k: v for k, v in {**RUN, "delta_t": 3}.items() if k != "method"}}


def train(out: Path, **values) -> int:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in values.items()]
    return main(["train", "--out", str(out), "--quiet", *sets])


@pytest.fixture
def grid_dirs(tmp_path):
    """A workflow config with four runs, and its run directories by grid path."""
    config = {**CONFIG, "results_dir": str(tmp_path / "results")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    root = grid.runs_root(config)
    specs = grid.run_grid(config)
    return path, {p: root / p for p in specs}, {p: grid.run_overrides(config, s) for p, s in specs.items()}


def status_lines(capsys, *argv) -> tuple[int, list[str]]:
    code = main(["status", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_status_before_during_and_after_a_grid(grid_dirs, capsys, monkeypatch):
    config, dirs, values = grid_dirs
    code, lines = status_lines(capsys, "--config", str(config))
    assert code == 0 and lines[0] == "4 runs: 4 not started"
    dense0, dense1, ssvi0, ssvi1 = sorted(dirs, key=lambda p: ("ssvi" in p, p))
    assert train(dirs[dense0], **values[dense0]) == 0                       # finished
    # running: a process holds the run's lock, after its second of 3 epochs
    dirs[dense1].mkdir(parents=True)
    (dirs[dense1] / "config.yaml").write_text(yaml.safe_dump(RunConfig.from_dict(values[dense1]).to_dict()))
    # failed: its train.log ends in an error line; stale: another config recorded than the grid expects
    monkeypatch.setattr(trainer, "train_one_epoch",
                        lambda run_: (_ for _ in ()).throw(trainer.diverged(run_.cfg, "in epoch 1 (injected)")))
    assert train(dirs[ssvi0], **values[ssvi0]) == 2
    monkeypatch.undo()
    assert train(dirs[ssvi1], **{**values[ssvi1], "epochs": 2}) == 0
    with run_directory_lock(dirs[dense1], "ssvi train"):
        write_progress(dirs[dense1], phase="training", epoch=2, epochs=3, loss=0.5, test_acc=0.9,
                       seconds_per_epoch=10.0)
        code, lines = status_lines(capsys, "--config", str(config))
    assert code == 1, lines
    assert lines[0] == "4 runs: 1 finished, 1 running, 1 failed, 1 stale"
    by_dir = {line.split()[1] if not line.startswith("not started") else line.split()[2]: line for line in lines[1:]}
    assert by_dir[str(dirs[dense0])].startswith("finished") and "acc " in by_dir[str(dirs[dense0])]
    running = by_dir[str(dirs[dense1])]
    assert running.startswith("running") and "epoch 2 of 3, loss 0.5000, test acc 90.00%, 10.0 s/epoch, ETA " in running
    failed = by_dir[str(dirs[ssvi0])]
    assert failed.startswith("failed") and "ssvi: error: training diverged" in failed
    stale = by_dir[str(dirs[ssvi1])]
    assert stale.startswith("stale") and "epochs: 2 -> 1" in stale
    code, lines = status_lines(capsys, "--config", str(config), "--failed")
    assert code == 1 and len(lines) == 2 and lines[1].startswith("failed")


def test_killed_interrupted_and_damaged_runs(tmp_path, capsys):
    finished = tmp_path / "finished"
    assert train(finished, **RUN) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    write_progress(killed, phase="training", epoch=1, epochs=5)  # then kill -9: nobody holds its lock
    damaged = tmp_path / "damaged"
    shutil.copytree(finished, damaged)
    (damaged / "subspace.json").write_text("[1, 2]")
    code, lines = status_lines(capsys, str(tmp_path))
    assert code == 1 and lines[0] == "3 runs: 1 finished, 1 stopped, 1 damaged"
    assert any(line.startswith("stopped") and "no process holds its lock" in line and "epoch 1 of 5" in line
               for line in lines)
    assert any(line.startswith("damaged") and "subspace.json: 6 bytes where 2 were recorded" in line for line in lines)
    assert run_status(finished).state == "finished"


def test_status_needs_something_to_look_at(capsys, tmp_path):
    assert main(["status"]) == 2
    assert "needs a workflow config" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_status_does_not_import_torch(tmp_path):
    import subprocess
    probe = ("import sys; from ssvi.cli import main; code = main(['status', sys.argv[1]]); "
             "assert 'torch' not in sys.modules, 'ssvi status imported torch'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 runs")


def test_tensorboard_scalars_are_read_back_equal_to_the_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert train(out, **{**RUN, "epochs": 3, "tensorboard": True}) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("loss", "ce", "kl", "lr", "test_acc", "density", "seconds"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([row[key] for row in history], rel=1e-6)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run of the CONFIG grid's dense_vi seed 0 (copied by each test that needs one)."""
    config = {**CONFIG, "results_dir": "unused"}
    spec = grid.run_grid(config)["digits/resnet18/dense_vi/default/d1/seed0"]
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out, **grid.run_overrides(config, spec)) == 0
    return out


def test_verify_and_status_follow_linked_run_directories(finished_run, tmp_path, capsys):
    config = {**CONFIG, "results_dir": str(tmp_path / "results"), "methods": {"dense_vi": [1.0]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = grid.runs_root(config)
    seed0, seed1 = (runs / p for p in sorted(grid.run_grid(config)))
    shutil.copytree(finished_run, seed0)
    # seed 1 lives on another disk, linked into the results directory; one of its result files is damaged
    elsewhere = tmp_path / "other_disk" / "seed1"
    shutil.copytree(finished_run, elsewhere)
    metrics = json.loads((elsewhere / "metrics.json").read_text())
    metrics["seed"] = metrics["config"]["seed"] = 1
    (elsewhere / "metrics.json").write_text(json.dumps(metrics))
    predictions = bytearray((elsewhere / "predictions.pt").read_bytes())
    predictions[len(predictions) // 2] ^= 0xFF
    (elsewhere / "predictions.pt").write_bytes(bytes(predictions))
    seed1.symlink_to(elsewhere, target_is_directory=True)
    (runs / "digits" / "loop").symlink_to(runs, target_is_directory=True)  # a cycle: followed once, not forever
    assert main(["verify", str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {seed1 / 'predictions.pt'} is damaged (its SHA256 differs" in out
    assert "verified 2 finished run(s)" in out and ": 1 damaged file(s)" in out
    folder = status_lines(capsys, "--full", str(tmp_path / "results"))
    by_config = status_lines(capsys, "--full", "--config", str(path))
    assert folder[0] == by_config[0] == 1
    assert folder[1][0] == by_config[1][0] == "2 runs: 1 finished, 1 damaged"
    assert any(line.startswith("damaged") and str(seed1) in line for line in folder[1])


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    import os
    import subprocess
    for k in range(3):
        (tmp_path / f"run{k}").mkdir()
        write_progress(tmp_path / f"run{k}", phase="training", epoch=1, epochs=5)
    read, write = os.pipe()
    os.close(read)  # `ssvi status | head -1` once head has gone
    try:
        result = subprocess.run([sys.executable, "-m", "ssvi", "status", str(tmp_path)], cwd=REPO, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.stderr == "" and result.returncode == 141, result.stderr


def test_a_run_whose_evaluation_failed_is_failed(finished_run, tmp_path, capsys, monkeypatch):
    from ssvi import files
    out = tmp_path / "run"
    shutil.copytree(finished_run, out, ignore=shutil.ignore_patterns("run.lock"))
    real = files.write_bytes

    def full_disk_for_the_evaluation(path, data):
        if Path(path).name == "ood_shift.json":
            raise files.DiskFullError(Path(path))
        return real(path, data)

    monkeypatch.setattr(files, "write_bytes", full_disk_for_the_evaluation)
    assert main(["evaluate", "--run", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ssvi: error: no space left on ") and "ood_shift.json" in error
    monkeypatch.undo()
    code, lines = status_lines(capsys, str(out))
    assert code == 1 and lines[0] == "1 runs: 1 failed", lines
    assert lines[1].startswith("failed") and error in lines[1] and "training finished: acc " in lines[1]
    code, lines = status_lines(capsys, "--failed", str(out))
    assert code == 1 and len(lines) == 2 and error in lines[1]
    # evaluated after all: finished
    assert main(["evaluate", "--run", str(out)]) == 0
    assert status_lines(capsys, str(out))[1][0] == "1 runs: 1 finished"
