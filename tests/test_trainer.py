"""Runner: kill-and-resume equality, finished runs not redone, config conflicts and restarts, divergence
guards, checkpoint round-trip.

    python -m pytest tests/test_trainer.py -x -q
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ssvi import trainer
from ssvi.config import RunConfig
from ssvi.errors import Interrupted
from ssvi.export import load_compact, tensors_identical
from ssvi.rundir import CHECKPOINT, FINAL_MODEL, METRICS, RESOLVED_CONFIG, RunConflictError, save_checkpoint
from ssvi.trainer import DivergedError, build_run, load_checkpoint, run, run_state, train_one_epoch

REPO = Path(__file__).resolve().parent.parent
TINY = {"width": 0.125, "image_size": 8, "epochs": 4, "delta_t": 3, "threads": 1, "num_samples": 3}
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from results import without_timing  # noqa: E402


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
    assert without_timing(first) == without_timing(second)
    assert torch.equal(torch.load(reference / "predictions.pt")["sample_probs"],
                       torch.load(resumed / "predictions.pt")["sample_probs"])
    assert tensors_identical(load_compact(reference / FINAL_MODEL)[0], load_compact(resumed / FINAL_MODEL)[0])


def test_finished_run_is_not_redone_and_conflicts_are_refused(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 1})
    first = run(cfg, tmp_path)
    mtime = (tmp_path / METRICS).stat().st_mtime_ns
    assert run(cfg, tmp_path) == first
    assert (tmp_path / METRICS).stat().st_mtime_ns == mtime
    with pytest.raises(RunConflictError) as error:
        run(RunConfig.from_dict({**TINY, "epochs": 1, "seed": 1}), tmp_path)
    assert "(seed: 0 -> 1)" in str(error.value) and "--restart-on-config-change" in str(error.value)


def _unfinished_run(cfg: RunConfig, out: Path, monkeypatch) -> None:
    """A run stopped (Ctrl-C) in its second epoch: a checkpoint of epoch 1, no result files."""
    real_epoch = trainer.train_one_epoch

    def second_epoch_interrupted(run_):
        if run_.epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(run_)

    monkeypatch.setattr(trainer, "train_one_epoch", second_epoch_interrupted)
    with pytest.raises(Interrupted, match="interrupted by SIGINT in epoch 2 of 2 of .*; re-run the same command to "
                                          r"resume from .*checkpoint.pt \(epoch 1\)"):
        run(cfg, out)
    monkeypatch.undo()
    assert (out / CHECKPOINT).exists() and not (out / METRICS).exists()


def test_conflicting_config_on_an_unfinished_run_leaves_its_files_alone(tmp_path, monkeypatch):
    cfg = RunConfig.from_dict({**TINY, "epochs": 2})
    _unfinished_run(cfg, tmp_path, monkeypatch)
    recorded = (tmp_path / RESOLVED_CONFIG).read_text()
    with pytest.raises(RunConflictError) as error:
        run(RunConfig.from_dict({**TINY, "epochs": 2, "lr": 0.05, "seed": 2}), tmp_path)
    assert f"{tmp_path} holds a run with another configuration (lr: 0.01 -> 0.05, seed: 0 -> 2)" in str(error.value)
    assert (tmp_path / RESOLVED_CONFIG).read_text() == recorded
    assert run(cfg, tmp_path)["config"] == cfg.to_dict()  # the recorded run still resumes


def test_restart_on_config_change_deletes_the_old_run_and_starts_fresh(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ssvi")  # as the CLI does without --quiet
    old, new = RunConfig.from_dict({**TINY, "epochs": 1}), RunConfig.from_dict({**TINY, "epochs": 1, "seed": 1})
    run(old, tmp_path)
    (tmp_path / "ood_shift.json").write_text("{}")
    result = run(new, tmp_path, restart_on_config_change=True)
    assert result["config"] == new.to_dict() and len(result["history"]) == 1
    assert not (tmp_path / "ood_shift.json").exists()
    assert yaml.safe_load((tmp_path / RESOLVED_CONFIG).read_text()) == new.to_dict()
    assert "configuration changed (seed: 0 -> 1): deleted the old run's files, starting fresh" in (
        tmp_path / "train.log").read_text()
    assert run(new, tmp_path, restart_on_config_change=True) == result  # same config: nothing to redo


def test_non_finite_loss_stops_without_result_or_checkpoint(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 2, "lr": 100.0, "method": "dense_vi"})
    with pytest.raises(DivergedError, match=r"training diverged in epoch 1: the loss became non-finite \(nan\)"):
        run(cfg, tmp_path)
    assert not (tmp_path / METRICS).exists() and not (tmp_path / CHECKPOINT).exists()


def test_weights_that_diverge_on_the_last_step_are_reported_and_not_kept(tmp_path, monkeypatch):
    real_epoch = trainer.train_one_epoch

    def last_step_diverges(run_):
        row = real_epoch(run_)  # the epoch's mean loss is finite: only the last step's update blew up
        if row["epoch"] == 2:
            with torch.no_grad():
                run_.model.linear.weight_mu.fill_(float("inf"))
        return row

    monkeypatch.setattr(trainer, "train_one_epoch", last_step_diverges)
    cfg = RunConfig.from_dict({**TINY, "epochs": 2})
    with pytest.raises(DivergedError) as error:
        run(cfg, tmp_path)
    assert str(error.value) == (
        "training diverged in epoch 2: non-finite weights in linear.weight_mu (lr=0.01, kl_scale=0.01, "
        "sigma_init=0.0006); lower lr or kl_scale (or sigma_init) and run again: no checkpoint was kept, "
        "since resuming it would diverge the same way")
    assert not (tmp_path / METRICS).exists() and not (tmp_path / CHECKPOINT).exists()
    monkeypatch.undo()
    assert run(cfg, tmp_path)["acc"] >= 0  # the retry starts over instead of failing the same way


def test_checkpoint_round_trip(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 2})
    first = build_run(cfg)
    first.method.initialize(first.model)
    first.history.append(train_one_epoch(first))
    first.epoch = 1
    save_checkpoint(tmp_path / CHECKPOINT, run_state(first))
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
