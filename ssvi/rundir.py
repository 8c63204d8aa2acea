"""The run directory: its files, checkpoints, the final posterior, the lock, progress and integrity checks.

A run directory (``--out``) holds one run. While it trains: ``config.yaml`` (the resolved config),
``checkpoint.pt`` (the last epoch, for resuming), ``progress.json`` (the last epoch's numbers, for
``ssvi status``) and ``train.log``. A finished run keeps its final posterior in the compact format
(``model_compact.pt``: mask bits plus the active mu and rho, with the training state a re-evaluation needs),
``predictions.pt``, ``subspace.json`` and, written last, ``metrics.json``, which records the size and SHA-256
of each of those files; the checkpoint is then deleted. The final model's record is also written beside it
(``final_model.json``), when it is written: it outlives ``metrics.json``, so that a re-evaluation
(``metrics.json`` deleted) verifies every byte of the model it starts from, the training state included.
``ssvi evaluate`` adds ``ood_shift.json`` (and, when asked, ``eval_probs.pt``, recorded there). Runs made
before this layout keep a dense ``model.pt`` (and their checkpoint); they are read as they are.

Every file is written atomically (:mod:`ssvi.files`). :func:`check_finished` verifies a finished run's files
(sizes; with ``full``, SHA-256 too) wherever a run is trusted, and a damaged file is one error naming it and
the files to delete so that re-running redoes only what was lost. :func:`load_final` checks the final model's
whole-file SHA-256 against its records before anything reads it.

``run.lock`` is held with ``flock`` by the one process using the directory (the OS drops it when the
process dies, ``kill -9`` included) and names the holder's pid and host; the same process may re-enter it.
A directory whose recorded config differs from the requested one is refused before anything is written,
or deleted with ``restart_on_config_change``.

    with run_directory_lock(out):
        check_same_run(cfg, out, restart_on_config_change=False)
        save_checkpoint(out / CHECKPOINT, state)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from . import locks
from .config import RunConfig, config_differences, describe_differences
from .errors import UserError
from .files import check_file, remove_stale_temporaries, save_torch, write_json

log = logging.getLogger("ssvi")

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
PREDICTIONS = "predictions.pt"
FINAL_MODEL = "model_compact.pt"
LEGACY_MODEL = "model.pt"            # the dense final model of runs made before the compact layout
FINAL_RECORD = "final_model.json"    # {model_compact.pt: {"bytes", "sha256"}}, written with the final model
SUBSPACE_RECORDS = "subspace.json"
RESOLVED_CONFIG = "config.yaml"
EVALUATION = "ood_shift.json"
EVAL_PROBS = "eval_probs.pt"
PROGRESS = "progress.json"
LOG_FILE = "train.log"
LOCK_FILE = "run.lock"
TENSORBOARD = "tensorboard"          # TensorBoard event files (run option tensorboard)
FILES_KEY = "files"                  # metrics.json / ood_shift.json: {name: {"bytes", "sha256"}} of result files
# what --restart-on-config-change deletes: everything derived from the old config (train.log stays)
RUN_FILES = (CHECKPOINT, METRICS, PREDICTIONS, FINAL_MODEL, FINAL_RECORD, LEGACY_MODEL, SUBSPACE_RECORDS, EVALUATION,
             EVAL_PROBS, RESOLVED_CONFIG, PROGRESS)
LOCK_WAIT_S = 2.0  # a lock probe (ssvi status) holds the lock for microseconds: retry that long before refusing


class RunConflictError(UserError, RuntimeError):
    """The run directory holds another run, or another process is using it."""


class DamagedRunError(UserError):
    """A result file of a finished run is missing, truncated or corrupt; the message names it and the fix."""

    def __init__(self, damage: "Damage", more: list["Damage"] = ()):
        self.damage, self.more = damage, list(more)
        extra = (f" (and {len(self.more)} more damaged file(s): {', '.join(d.file.name for d in self.more)})"
                 if self.more else "")
        super().__init__(damage.message() + extra)


# --------------------------------------------------------------------------------------------
# checkpoints and the final posterior
# --------------------------------------------------------------------------------------------

def rng_state() -> dict:
    import numpy as np
    import torch
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> dict:
    """Write a training state (``ssvi.trainer.run_state``) atomically."""
    return save_torch(path, {**state, "rng": rng_state()})


def read_checkpoint(path: Path, map_location, mmap: bool = False) -> dict:
    """A checkpoint's state; a file that cannot be read as one is a UserError naming the file to delete."""
    import torch
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        state["config"]
    # what torch.load and unpickling raise for truncated, overwritten or foreign files
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path} is truncated or corrupt ({reason}); delete it to restart this run from scratch: "
                        f"rm {path}") from error
    return state


def save_final(out: Path, state_dict: dict, final_state: dict) -> dict:
    """The finished run's posterior in the compact format, with the training state (config, epoch, step,
    FLOPs, wall time, history, method state) that a re-evaluation needs, and its record (``final_model.json``);
    returns the record."""
    from .export import save_compact
    record = save_compact(state_dict, out / FINAL_MODEL, extra=final_state)
    write_json(out / FINAL_RECORD, {FINAL_MODEL: record})
    return record


def final_model_records(out: Path, name: str) -> list[dict]:
    """Every record of the final model ``name``: ``final_model.json``'s and ``metrics.json``'s (none for runs made
    before they were written); DamagedRunError when one of those files cannot be read."""
    records = []
    if (out / FINAL_RECORD).exists():
        records.append(read_final_record(out).get(name))
    if (out / METRICS).exists():
        records.append((read_metrics(out).get(FILES_KEY) or {}).get(name))
    return [r for r in records if r]


def check_final_model(out: Path, path: Path) -> None:
    """DamagedRunError unless every byte of the final model ``path`` matches its records (SHA-256)."""
    for record in final_model_records(out, path.name):
        problem = check_file(path, record, full=True)
        if problem:
            raise DamagedRunError(Damage(path, problem, repair_advice(out, path.name)))


def final_model_path(out: Path) -> Path | None:
    """The final posterior of the run in ``out``: the compact file, or a legacy dense ``model.pt``."""
    for name in (FINAL_MODEL, LEGACY_MODEL):
        if (out / name).is_file():
            return out / name
    return None


def load_final(out: Path, map_location="cpu") -> tuple[dict, dict]:
    """(state dict, final state) of the run in ``out``, compact or legacy, after checking every byte of the file
    against its records; DamagedRunError for a damaged file.

    A legacy ``model.pt`` holds only the config next to the weights; its final state is ``{"config": ...}``."""
    import torch
    from .export import CompactFormatError, load_compact
    path = final_model_path(out)
    if path is None:
        raise DamagedRunError(Damage(out / FINAL_MODEL, "missing", repair_advice(out, FINAL_MODEL)))
    check_final_model(out, path)
    try:
        if path.name == FINAL_MODEL:
            return load_compact(path, map_location=map_location)
        legacy = torch.load(path, map_location=map_location, weights_only=False)
        return legacy["model"], {"config": legacy["config"]}
    except (CompactFormatError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
            pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise DamagedRunError(Damage(path, reason, repair_advice(out, path.name))) from None


def resume_point(out: Path) -> str:
    """What re-running the run in ``out`` starts from, as the files on disk say."""
    if (out / FINAL_MODEL).is_file() and not (out / METRICS).exists():
        return f"its final model ({FINAL_MODEL}): training is complete, only the evaluation is redone"
    if (out / CHECKPOINT).exists():
        try:
            return f"{out / CHECKPOINT} (epoch {read_checkpoint(out / CHECKPOINT, 'cpu', mmap=True)['epoch']})"
        except UserError:
            return f"scratch ({out / CHECKPOINT} is unreadable)"
    return "the start (no checkpoint was written yet)"


# --------------------------------------------------------------------------------------------
# integrity of finished runs
# --------------------------------------------------------------------------------------------

def repair_advice(out: Path, name: str) -> str:
    """Which files to delete so that re-running redoes only what ``name``'s damage lost, and how."""
    rerun = (f"then re-run the run's `python -m ssvi train --out {out} ...` command, or `snakemake` (it re-runs "
             f"a run whose {METRICS} or {EVALUATION} is missing)")
    if name in (EVALUATION, EVAL_PROBS):
        files = [EVALUATION, EVAL_PROBS]
        redo = f"the OOD / shift evaluation is redone from the final model (`python -m ssvi evaluate --run {out}`)"
    elif name in (FINAL_MODEL, LEGACY_MODEL, FINAL_RECORD):
        files = [name, FINAL_MODEL, LEGACY_MODEL, FINAL_RECORD, METRICS, PREDICTIONS, SUBSPACE_RECORDS, EVALUATION,
                 EVAL_PROBS]
        redo = (f"the run resumes from {CHECKPOINT}" if (out / CHECKPOINT).is_file()
                else "the run is retrained from scratch (its checkpoint was removed when it finished)")
    else:  # metrics.json, predictions.pt, subspace.json: written from the final model
        files = [METRICS, PREDICTIONS, SUBSPACE_RECORDS]
        redo = "the run is re-evaluated from its final model, without retraining"
    files = list(dict.fromkeys(files))
    present = [f for f in files if (out / f).exists() or f == name]
    listed = ", ".join(present[:-1]) + f" and {present[-1]}" if len(present) > 1 else present[0]
    return f"delete {listed} ({redo}): rm {' '.join(str(out / f) for f in present)}; {rerun}"


def read_json_file(path: Path, what: str, required: tuple[str, ...] = ()) -> dict:
    """A result JSON file; DamagedRunError naming it and the fix when it is empty, not JSON or incomplete."""
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError(f"it holds a {type(value).__name__}, not an object")
        missing = [k for k in required if k not in value]
        if missing:
            raise ValueError(f"no {', '.join(map(repr, missing))} in it")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or ["empty"])[0]
        raise DamagedRunError(Damage(path, f"{what} unreadable: {reason}",
                                     repair_advice(path.parent, path.name))) from None
    return value


METRICS_KEYS = ("method", "dataset", "arch", "seed", "config", "acc")
EVALUATION_KEYS = ("method", "dataset", "arch", "seed", "ood", "shift")


def recorded_train_time(metrics: dict) -> float:
    """A finished run's training seconds as its metrics.json records them (with its own source's, if any)."""
    return float(metrics.get("train_time_s", metrics.get("provenance", {}).get("wall_time_s", 0.0)))


def read_metrics(out: Path) -> dict:
    return read_json_file(Path(out) / METRICS, "the run's results", METRICS_KEYS)


def read_evaluation_file(out: Path) -> dict:
    return read_json_file(Path(out) / EVALUATION, "the OOD / shift evaluation", EVALUATION_KEYS)


def read_final_record(out: Path) -> dict:
    """``final_model.json``: {final model name: {"bytes", "sha256"}}; DamagedRunError when it is not that."""
    path = Path(out) / FINAL_RECORD
    records = read_json_file(path, "the final model's record")
    if not records or not all(isinstance(r, dict) and {"bytes", "sha256"} <= set(r) for r in records.values()):
        raise DamagedRunError(Damage(path, "the final model's record unreadable: no size and SHA-256 in it",
                                     repair_advice(path.parent, path.name)))
    return records


@dataclass
class Damage:
    file: Path
    problem: str
    advice: str

    def message(self) -> str:
        return f"{self.file} is damaged ({self.problem}); {self.advice}"


def damaged_files(out: Path, full: bool = False) -> list[Damage]:
    """Every recorded result file of the run in ``out`` that is missing, truncated (or, with ``full``, corrupted):
    a finished run's (metrics.json and ood_shift.json must parse), or the final model of a run whose training
    finished (``final_model.json``). Runs made before files were recorded are checked for their final model only."""
    out = Path(out)
    records: list[tuple[str, dict]] = []
    try:
        if (out / FINAL_RECORD).exists():
            records += read_final_record(out).items()
        if (out / METRICS).exists():
            metrics = read_metrics(out)
            if not metrics.get(FILES_KEY) and not records and final_model_path(out) is None:
                return [Damage(out / FINAL_MODEL, "missing", repair_advice(out, FINAL_MODEL))]
            records += (metrics.get(FILES_KEY) or {}).items()
            if (out / EVALUATION).is_file():
                records += (read_evaluation_file(out).get(FILES_KEY) or {}).items()
    except DamagedRunError as error:
        return [error.damage]
    damage = {}
    for name, record in records:
        problem = check_file(out / name, record, full) if name not in damage else None
        if problem:
            damage[name] = Damage(out / name, problem, repair_advice(out, name))
    return list(damage.values())


def check_finished(out: Path, full: bool = False) -> dict:
    """The metrics of the finished run in ``out`` after checking its result files; DamagedRunError otherwise."""
    damage = damaged_files(out, full)
    if damage:
        raise DamagedRunError(damage[0], damage[1:])
    return read_metrics(out)


# --------------------------------------------------------------------------------------------
# progress, log, lock, identity
# --------------------------------------------------------------------------------------------

def write_progress(out: Path, **values) -> None:
    """``progress.json``: the run's phase and last epoch (read by ``ssvi status``; small, atomic)."""
    write_json(out / PROGRESS, {**values, "pid": os.getpid(), "host": socket.gethostname(),
                                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


class RunLogHandler(logging.FileHandler):
    """``train.log``: a failed write of a log line (a full disk) must not print a traceback of its own."""

    def handleError(self, record):  # noqa: N802 (logging's name)
        pass


def attach_log_file(out: Path) -> logging.Handler:
    """``train.log`` gets every line of the run (INFO and up), whatever the console shows (``--quiet``)."""
    handler = RunLogHandler(out / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.INFO)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler


def make_run_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; --out must name a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run directory {out} ({error.strerror}); choose a --out you can write to") from None


_held: dict[Path, int] = {}  # run directories this process holds -> nesting depth


@contextlib.contextmanager
def run_directory_lock(out: Path, purpose: str = "ssvi", option: str = "--out"):
    """Hold ``out/run.lock`` exclusively (:mod:`ssvi.locks`: ``flock``, released by the OS when the process dies)
    with our pid and host in it. The same process may re-enter (train, then evaluate, in one job); another is
    refused. ``option``: the command's option naming the directory (train: --out, evaluate: --run), for the advice."""
    key = Path(os.path.abspath(out))
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        fd = locks.acquire(out / LOCK_FILE, locks.process_note(purpose), wait_s=LOCK_WAIT_S)
    except locks.LockHeld as held:
        then = ", or use another --out" if option == "--out" else ", then run again"
        raise RunConflictError(f"{out} is in use by another ssvi process ({held.note}); wait for it to finish"
                               f"{then}") from None
    except OSError as error:
        fix = (f"choose a {option} you can write to" if option == "--out" else "it writes its results into the run: "
               f"make the directory writable, or copy the run where you can write and pass the copy as {option}")
        raise UserError(f"cannot write to the run directory {out} ({error.strerror}); {fix}") from None
    try:
        remove_stale_temporaries(out)  # left by a process killed mid-write
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        locks.release(fd)


def lock_holder(out: Path) -> str | None:
    """Who holds ``out``'s lock ("pid N on HOST, purpose"), or None when nobody does (a non-blocking probe)."""
    return locks.holder(Path(out) / LOCK_FILE)


def recorded_config(out: Path) -> dict | None:
    """The config of the run ``out`` holds (finished, finished training, or checkpointed), if any."""
    if (out / METRICS).exists():
        return read_metrics(out)["config"]
    if final_model_path(out) is not None:
        return load_final(out)[1]["config"]
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
    delete_run_files(out)
    log.info("configuration changed (%s): deleted the old run's files, starting fresh", describe_differences(differences))


def delete_run_files(out: Path) -> None:
    import shutil
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / TENSORBOARD, ignore_errors=True)

