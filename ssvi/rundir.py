"""The run directory: its file names, atomic writes, checkpoints, the per-run lock and the identity check.

A run directory (``--out``) holds one run. ``run.lock`` is held with ``flock`` while a process uses it
(the OS drops it when the process dies, ``kill -9`` included) and names the holder's pid. Files are
written atomically (temporary file + rename). A directory whose recorded config (``metrics.json`` or
``checkpoint.pt``) differs from the requested one is refused before anything is written, or deleted
with ``restart_on_config_change``.

    with run_directory_lock(out):
        check_same_run(cfg, out, restart_on_config_change=False)
        save_checkpoint(run, out / CHECKPOINT)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import RunConfig, config_differences, describe_differences
from .errors import UserError

if TYPE_CHECKING:
    from .trainer import Run

log = logging.getLogger("ssvi")

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
PREDICTIONS = "predictions.pt"
FINAL_MODEL = "model.pt"
SUBSPACE_RECORDS = "subspace.json"
RESOLVED_CONFIG = "config.yaml"
LOCK_FILE = "run.lock"
# what --restart-on-config-change deletes: everything derived from the old config (train.log stays)
RUN_FILES = (CHECKPOINT, METRICS, PREDICTIONS, FINAL_MODEL, SUBSPACE_RECORDS, "ood_shift.json", RESOLVED_CONFIG,
             "model_compact.pt")


class RunConflictError(UserError, RuntimeError):
    """The run directory holds another run, or another process is using it."""


def atomic_write(path: Path, write) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: Run, path: Path) -> None:
    state = {
        "config": run.cfg.to_dict(), "epoch": run.epoch, "step": run.step, "train_flops": run.train_flops,
        "wall_time": run.wall_time, "history": run.history, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "method": run.method.state_dict(), "rng": rng_state(),
    }
    atomic_write(path, lambda p: torch.save(state, p))


def read_checkpoint(path: Path, map_location: torch.device | str, mmap: bool = False) -> dict:
    """A checkpoint's state; a file that cannot be read as one is a UserError naming the file to delete."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        state["config"]
    # what torch.load and unpickling raise for truncated, overwritten or foreign files
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path} is truncated or corrupt ({reason}); delete it to restart this run from scratch: "
                        f"rm {path}") from error
    return state


def load_checkpoint(run: Run, path: Path) -> None:
    state = read_checkpoint(path, run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.method.load_state_dict(state["method"])
    run.epoch, run.step, run.train_flops = state["epoch"], state["step"], state["train_flops"]
    run.wall_time, run.history = state["wall_time"], state["history"]
    set_rng_state(state["rng"])


def attach_log_file(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def make_run_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; --out must name a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run directory {out} ({error.strerror}); choose a --out you can write to") from None


@contextlib.contextmanager
def run_directory_lock(out: Path):
    """Hold ``out/run.lock`` exclusively (``flock``: released by the OS when the process dies) and write our pid."""
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"cannot write to the run directory {out} ({error.strerror}); choose a --out you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunConflictError(f"{out} is in use by another ssvi train (pid {holder}); "
                                   "wait for it to finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the lock


def recorded_config(out: Path) -> dict | None:
    """The config of the run ``out`` holds (finished or checkpointed), if any."""
    if (out / METRICS).exists():
        try:
            return json.loads((out / METRICS).read_text())["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UserError(f"{out / METRICS} is corrupt ({error}); delete it to redo this run's evaluation: "
                            f"rm {out / METRICS}") from None
    if (out / CHECKPOINT).exists():
        return read_checkpoint(out / CHECKPOINT, "cpu", mmap=True)["config"]  # mmap: reads only what it uses
    return None


def check_same_run(cfg: RunConfig, out: Path, restart_on_config_change: bool) -> None:
    """Refuse (or, when asked, delete) a run in ``out`` recorded with another config; writes nothing otherwise."""
    recorded = recorded_config(out)
    differences = config_differences(recorded, cfg.to_dict()) if recorded is not None else {}
    if not differences:
        return
    if not restart_on_config_change:
        raise RunConflictError(f"{out} holds a run with another configuration ({describe_differences(differences)}); "
                               "use another --out, or add --restart-on-config-change to delete that run and start over")
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    log.info("configuration changed (%s): deleted the old run's files, starting fresh", describe_differences(differences))
