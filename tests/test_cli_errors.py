"""Failures a user can fix print one line ``ssvi: error: <cause and fix>`` and exit 2, and the line is also
appended to the run's train.log; a traceback appears only with ``ssvi --debug``.

    python -m pytest tests/test_cli_errors.py -x -q

Grouped by kind: config files, config values, the machine (devices, directories), run-directory state
(conflicts, locks, corrupt checkpoints, divergence), data, then every subcommand and --debug / --help.
"""

import errno
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssvi import export, trainer
from ssvi.cli import build_parser, main
from ssvi.config import ConfigError
from ssvi.errors import UserError
from ssvi.rundir import CHECKPOINT, LOCK_FILE, run_directory_lock

REPO = Path(__file__).resolve().parent.parent
TINY = {"method": "dense_vi", "width": 0.125, "image_size": 8, "epochs": 1, "threads": 1, "num_samples": 2}


def _train(out, *extra: str, **overrides) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in {**TINY, **overrides}.items()]
    return ["train", "--out", str(out), "--quiet", *sets, *extra]


def _error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one stderr line, ``ssvi: error: ...``."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssvi: error: "), lines
    return lines[0]


def _last_log_line(out: Path) -> str:
    return (out / "train.log").read_text().splitlines()[-1]


# --------------------------------------------------------------------------------------------
# config files
# --------------------------------------------------------------------------------------------

def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("method: ssvi\nlr: [0.1\nepochs: 3\n")
    line = _error_line(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert line.startswith(f"ssvi: error: config file {config} line 3 is not valid YAML (")
    assert line.endswith("); fix the file")


def test_duplicate_yaml_key_names_the_key_and_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.1\nlr: 0.2\n")
    line = _error_line(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert line == f"ssvi: error: config file {config}: key 'lr' appears twice (lines 1 and 2); keep one"


def test_config_naming_a_directory(tmp_path, capsys):
    line = _error_line(capsys, ["train", "--config", str(tmp_path), "--out", str(tmp_path / "run")])
    assert line == f"ssvi: error: config file {tmp_path} is a directory; name a YAML file"


# --------------------------------------------------------------------------------------------
# config values: refused before anything runs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("seed=4294967296", "seed=4294967296 must be an integer in [0, 4294967295]"),
    ("device=cuda:abc", "device='cuda:abc' is not allowed; allowed: auto, cpu, cuda, cuda:N (N = 0, 1, ...)"),
    ("arch=timm/doesnotexist", "arch='timm/doesnotexist' is not a timm model; "
                               "timm.list_models() lists the names (e.g. timm/resnet18)"),
    ("sigma_init=1000", "sigma_init=1000.0 is out of range; allowed: (0.0, 10.0]"),
    ("lr=.inf", "lr=inf is out of range; allowed: (0.0, 100.0]"),
    ("kl_scale=.inf", "kl_scale=inf is out of range; allowed: [0.0, 1000000.0]"),
    ("width=.inf", "width=inf is out of range; allowed: (0.0, 16.0]"),
])
def test_bad_values_are_one_line(tmp_path, capsys, setting, message):
    line = _error_line(capsys, ["train", "--out", str(tmp_path / "run"), "--set", setting])
    assert line == f"ssvi: error: {message}"
    assert not (tmp_path / "run").exists()


def test_exponent_numbers_are_accepted_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    assert main(_train(out, lr="1e-3", kl_scale="5E-2")) == 0
    assert "lr: 0.001\n" in (out / "config.yaml").read_text()


# --------------------------------------------------------------------------------------------
# the machine: devices and directories
# --------------------------------------------------------------------------------------------

def test_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = _error_line(capsys, _train(out, device="cuda"))
    assert line == ("ssvi: error: device='cuda' was asked for but CUDA is not available on this machine; "
                    "use --set device=cpu (or device: auto), or run on a GPU node")
    assert _last_log_line(out).endswith(line)


def test_read_only_out(tmp_path, capsys, monkeypatch):
    # simulated: this suite may run as root, which writes through file permissions
    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    out = tmp_path / "run"
    line = _error_line(capsys, _train(out))
    assert line == (f"ssvi: error: cannot create the run directory {out} (Permission denied); "
                    "choose a --out you can write to")


def test_evaluate_on_a_run_it_cannot_write_names_its_own_option(tmp_path, capsys, monkeypatch):
    """Issue 28: ``evaluate`` takes --run, yet an unwritable run said 'choose a --out you can write to'."""
    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):  # simulated: this suite may run as root
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    line = _error_line(capsys, ["evaluate", "--run", str(run)])
    assert line == (f"ssvi: error: cannot write to the run directory {run} (Permission denied); it writes its results "
                    "into the run: make the directory writable, or copy the run where you can write and pass the copy "
                    "as --run")


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    out = tmp_path / "notes.txt" / "run"
    line = _error_line(capsys, _train(out))
    assert line == (f"ssvi: error: cannot create the run directory {out} (Not a directory); "
                    "choose a --out you can write to")
    line = _error_line(capsys, _train(tmp_path / "notes.txt"))
    assert line == f"ssvi: error: --out {tmp_path / 'notes.txt'} is a file; --out must name a directory"


# --------------------------------------------------------------------------------------------
# run-directory state
# --------------------------------------------------------------------------------------------

def test_train_evaluate_on_a_trained_run_says_it_skips_training_then_evaluates(tmp_path, caplog):
    """Issue 28: 'already finished; nothing to do' was printed before an evaluation that then ran."""
    out = tmp_path / "run"
    assert main(_train(out)) == 0
    caplog.clear()
    caplog.set_level(logging.INFO, logger="ssvi")
    assert main(_train(out, "--evaluate")) == 0
    lines = [record.getMessage() for record in caplog.records]
    skipped = [i for i, line in enumerate(lines) if "already trained" in line]
    evaluating = [i for i, line in enumerate(lines) if line.startswith("evaluating OOD detection and distribution")]
    assert skipped and evaluating and skipped[0] < evaluating[0], lines
    assert not any("nothing to do" in line for line in lines)
    assert (out / "ood_shift.json").is_file()


def test_conflicting_config_names_keys_and_values_and_the_way_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train(out)) == 0
    line = _error_line(capsys, _train(out, seed=1, lr=0.05))
    assert line == (f"ssvi: error: {out} holds a run with another configuration (lr: 0.01 -> 0.05, seed: 0 -> 1); "
                    "use another --out, or add --restart-on-config-change to delete that run and start over")
    assert _last_log_line(out).endswith(line)
    assert main(_train(out, "--restart-on-config-change", seed=1, lr=0.05)) == 0


def test_second_process_on_the_same_out_fails_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-m", "ssvi", *_train(out, epochs=100000)], cwd=REPO)
    try:
        deadline = time.time() + 120
        while not ((out / LOCK_FILE).exists() and (out / LOCK_FILE).read_text().strip()):
            assert holder.poll() is None and time.time() < deadline, "the holder never took the lock"
            time.sleep(0.05)
        # a second real process (in-process, a missing lock would train for ages instead of failing)
        second = subprocess.run([sys.executable, "-m", "ssvi", *_train(out, epochs=100000)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.splitlines() == [f"ssvi: error: {out} is in use by another ssvi process (pid "
                                              f"{holder.pid} on {socket.gethostname()}, ssvi train); wait for it "
                                              "to finish, or use another --out"]
        os.kill(holder.pid, signal.SIGKILL)  # no chance to clean up: the OS releases the lock
        holder.wait()
        with run_directory_lock(out, "test"):
            assert (out / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}, test\n"
    finally:
        holder.kill()
        holder.wait()


def test_truncated_checkpoint_names_the_file_to_delete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_epoch = trainer.train_one_epoch
    monkeypatch.setattr(trainer, "train_one_epoch",
                        lambda run_: (_ for _ in ()).throw(KeyboardInterrupt) if run_.epoch == 1 else real_epoch(run_))
    assert main(_train(out, epochs=2)) == 130  # stopped in epoch 2: the checkpoint of epoch 1 stays
    monkeypatch.undo()
    capsys.readouterr()
    checkpoint = out / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    line = _error_line(capsys, _train(out, epochs=2))
    assert line.startswith(f"ssvi: error: {checkpoint} is truncated or corrupt (")
    assert line.endswith(f"); delete it to restart this run from scratch: rm {checkpoint}")
    assert _last_log_line(out).endswith(line)


def test_divergence_is_one_line_and_keeps_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    line = _error_line(capsys, _train(out, lr=100.0, epochs=2))
    assert line.startswith("ssvi: error: training diverged in epoch 1: the loss became non-finite (nan) "
                           "(lr=100.0, kl_scale=0.01, sigma_init=0.0006); lower lr or kl_scale")
    assert _last_log_line(out).endswith(line)
    assert not (out / CHECKPOINT).exists()


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def test_missing_data(tmp_path, capsys):
    out = tmp_path / "run"
    line = _error_line(capsys, _train(out, dataset="cifar10", data_dir=tmp_path / "empty"))
    assert "CIFAR-10" in line and str(tmp_path / "empty") in line
    assert _last_log_line(out).endswith(line)


# --------------------------------------------------------------------------------------------
# every subcommand, --debug and --help
# --------------------------------------------------------------------------------------------

def test_delegated_subcommands_print_user_errors_as_one_line(tmp_path, capsys, monkeypatch):
    def fails(argv):
        raise UserError("the cause, and the fix")

    monkeypatch.setattr(export, "main", fails)
    line = _error_line(capsys, ["export", "--run", str(tmp_path)])
    assert line == "ssvi: error: the cause, and the fix"
    assert _last_log_line(tmp_path).endswith(line)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="cuda:abc"):
        main(["--debug", "train", "--out", str(tmp_path), "--set", "device=cuda:abc"])


def test_help_lists_every_subcommand():
    text = build_parser().format_help()
    for command in ("train", "options", "evaluate", "data", "export", "bench"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in text.splitlines()), command
    assert "--debug" in text
