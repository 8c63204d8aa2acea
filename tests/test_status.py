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
