"""Runner: kill-and-resume equality, finished runs not redone, non-finite guard, checkpoint round-trip."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssvi.config import RunConfig
from ssvi.trainer import (CHECKPOINT, METRICS, NonFiniteLossError, RunConflictError, build_run, load_checkpoint, run,
                          save_checkpoint, train_one_epoch)

REPO = Path(__file__).resolve().parent.parent
TINY = {"width": 0.125, "image_size": 8, "epochs": 4, "delta_t": 3, "threads": 1, "num_samples": 3}
TIMING_KEYS = ("seconds", "wall_time_s", "finished_at")


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _train_command(out: Path) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return [sys.executable, "-m", "ssvi", "train", "--out", str(out), "--quiet", *sets]


def _checkpoint_epoch(out: Path) -> int:
    try:
        return torch.load(out / CHECKPOINT, weights_only=False)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(_train_command(reference), cwd=REPO, check=True)
    process = subprocess.Popen(_train_command(resumed), cwd=REPO)
    deadline = time.time() + 240
    while _checkpoint_epoch(resumed) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(process.pid, signal.SIGKILL)  # mid-epoch 3: no chance to clean up
    process.wait()
    assert not (resumed / METRICS).exists()
    subprocess.run(_train_command(resumed), cwd=REPO, check=True)
    first = json.loads((reference / METRICS).read_text())
    second = json.loads((resumed / METRICS).read_text())
    assert _without_timing(first) == _without_timing(second)
    assert torch.equal(torch.load(reference / "predictions.pt")["sample_probs"],
                       torch.load(resumed / "predictions.pt")["sample_probs"])


def test_finished_run_is_not_redone_and_conflicts_are_refused(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 1})
    first = run(cfg, tmp_path)
    mtime = (tmp_path / METRICS).stat().st_mtime_ns
    assert run(cfg, tmp_path) == first
    assert (tmp_path / METRICS).stat().st_mtime_ns == mtime
    with pytest.raises(RunConflictError):
        run(RunConfig.from_dict({**TINY, "epochs": 1, "seed": 1}), tmp_path)


def test_non_finite_loss_stops_without_result(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 2, "lr": 1e12, "method": "dense_vi"})
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        run(cfg, tmp_path)
    assert not (tmp_path / METRICS).exists()


def test_checkpoint_round_trip(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 2})
    first = build_run(cfg)
    first.method.initialize(first.model)
    first.history.append(train_one_epoch(first))
    first.epoch = 1
    save_checkpoint(first, tmp_path / CHECKPOINT)
    expected_rng = torch.get_rng_state()
    torch.manual_seed(123)  # disturb the global RNG: loading must restore it
    second = build_run(cfg)
    load_checkpoint(second, tmp_path / CHECKPOINT)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert (second.epoch, second.step, second.train_flops) == (first.epoch, first.step, first.train_flops)
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert second.optimizer.state_dict()["param_groups"] == first.optimizer.state_dict()["param_groups"]
    assert second.scheduler.state_dict() == first.scheduler.state_dict()
    assert second.method.records == first.method.records
