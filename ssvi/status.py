"""One view of a grid in flight: ``ssvi status`` and ``ssvi verify``. They only read run directories (no torch
import, no lock taken for longer than a non-blocking probe), so they are instant on a login node.

    python -m ssvi status --config config/paper.yaml        # every run of a workflow config's grid
    python -m ssvi status results/runs                      # every run directory found under a folder
    python -m ssvi status --config config/paper.yaml --failed   # only failed and damaged runs
    python -m ssvi verify results/runs                      # SHA-256 of every finished run's result files

One line per run, counts at the top. States:
  finished     result files whole (sizes checked; ``--full`` / ``verify``: SHA-256 too); "not evaluated yet" when
               it has no ood_shift.json and nothing failed since it finished
  evaluating   finished training; its process (holding run.lock) evaluates it now
  running      a process holds its lock: epoch e of E, last loss and test accuracy, s/epoch, ETA
  failed       its train.log ends in an error line (``ssvi: error: ...`` or ``ssvi: crashed: ...``), in training
               or in its evaluation (a finished run without ood_shift.json whose evaluation failed)
  stopped      no process holds it and it is not finished: interrupted (its train.log says how) or killed;
               re-running resumes it
  damaged      a result file (or the final model of a run whose training finished) is missing, truncated or
               corrupt (the line names the file to delete)
  stale        its recorded config differs from the one the workflow config gives its path
  not started  no run directory (or an empty one) yet
The exit status is 1 when any run failed or is damaged, else 0. A folder is searched for run directories
through symbolic links too (each directory once, so a link cycle ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UserError
from .rundir import (CHECKPOINT, EVALUATION, FILES_KEY, FINAL_RECORD, LOG_FILE, METRICS, PROGRESS, RESOLVED_CONFIG,
                     DamagedRunError, damaged_files, final_model_path, lock_holder, read_metrics)

STATES = ("finished", "evaluating", "running", "failed", "stopped", "damaged", "stale", "not started")
FAILING = ("failed", "damaged")
START_MARKER = "ssvi train: started"
FINISHED_MARKER = "finished: acc"  # ssvi.trainer's log line once a run's result files are written
ERROR_PREFIXES = ("ssvi: error:", "ssvi: crashed:")
INTERRUPT_PREFIX = "ssvi: interrupted"
LOG_TAIL_BYTES = 65536


@dataclass
class RunStatus:
    run_dir: Path
    state: str
    detail: str = ""

    def line(self, width: int) -> str:
        return f"{self.state:<11}  {str(self.run_dir):<{width}}  {self.detail}".rstrip()


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="run directories or folders to search for them (default with --config: its grid)")
    parser.add_argument("--config", help="workflow config: its grid's runs, and stale ones flagged")
    parser.add_argument("--failed", action="store_true", help="list only failed and damaged runs")
    parser.add_argument("--full", action="store_true", help="check finished runs' result files by SHA-256 too")


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------

def log_tail(out: Path) -> list[str]:
    """The lines of train.log since the last start of training (the last 64 KiB at most)."""
    try:
        with open(out / LOG_FILE, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if START_MARKER in line]
    return lines[starts[-1]:] if starts else lines


def last_event(lines: list[str]) -> str | None:
    """The last error or interruption line (without its time stamp), if the log has one."""
    for line in reversed(lines):
        for prefix in (*ERROR_PREFIXES, INTERRUPT_PREFIX):
            if prefix in line:
                return line[line.index(prefix):]
    return None


def evaluation_event(lines: list[str]) -> str | None:
    """The error or interruption line logged after the run finished (by its evaluation), if any."""
    finished = [i for i, line in enumerate(lines) if FINISHED_MARKER in line]
    return last_event(lines[finished[-1] + 1:]) if finished else None


def read_progress(out: Path) -> dict:
    try:
        return json.loads((out / PROGRESS).read_text())
    except (OSError, ValueError):
        return {}


def progress_text(progress: dict, running: bool) -> str:
    epoch, epochs = progress.get("epoch", 0), progress.get("epochs")
    if progress.get("phase") == "evaluating":
        return f"evaluating after epoch {epoch} of {epochs}"
    parts = [f"epoch {epoch} of {epochs}" if epochs else "no epoch recorded"]
    if "loss" in progress:
        parts.append(f"loss {progress['loss']:.4f}, test acc {100 * progress['test_acc']:.2f}%")
    per_epoch = progress.get("seconds_per_epoch")
    if per_epoch:
        parts.append(f"{per_epoch:.1f} s/epoch")
        if running and epochs:
            parts.append(f"ETA {format_seconds(max(0.0, (epochs - epoch) * per_epoch - _age(progress)))}")
    if progress.get("updated_at"):
        parts.append(f"updated {format_seconds(_age(progress))} ago")
    return ", ".join(parts)


def _age(progress: dict) -> float:
    try:
        return max(0.0, time.time() - time.mktime(time.strptime(progress["updated_at"], "%Y-%m-%dT%H:%M:%S%z")))
    except (KeyError, ValueError):
        return 0.0


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def recorded_values(out: Path) -> dict | None:
    """The run config recorded in the directory without loading torch files (metrics.json, config.yaml)."""
    try:
        if (out / METRICS).is_file():
            return read_metrics(out)["config"]
        if (out / RESOLVED_CONFIG).is_file():
            return yaml.safe_load((out / RESOLVED_CONFIG).read_text())
    except (OSError, yaml.YAMLError, DamagedRunError):
        return None
    return None


def run_status(out: Path, expected: dict[str, dict] | None = None, full: bool = False) -> RunStatus:
    """The state of the run in ``out`` (see the module docstring); ``expected``: grid path -> run config."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return RunStatus(out, "not started")
    holder = lock_holder(out)
    if expected is not None:
        import grid
        recorded = recorded_values(out)
        reason = grid.staleness(out, recorded, expected) if recorded is not None else None
        if reason and not holder:
            return RunStatus(out, "stale", reason)
    if (out / METRICS).exists() or (final_model_path(out) and (out / FINAL_RECORD).exists() and not holder):
        damage = damaged_files(out, full)
        if damage:
            first = damage[0]
            more = f" (+{len(damage) - 1} more)" if len(damage) > 1 else ""
            return RunStatus(out, "damaged", f"{first.file.name}: {first.problem}{more}; {first.advice}")
    if (out / METRICS).exists():
        if holder:
            return RunStatus(out, "evaluating", f"held by {holder}")
        metrics = read_metrics(out)
        numbers = f"acc {100 * metrics['acc']:.2f}%, nll {metrics['nll']:.4f}"
        if (out / EVALUATION).is_file():
            return RunStatus(out, "finished", numbers)
        event = evaluation_event(log_tail(out))
        if event and event.startswith(ERROR_PREFIXES):
            return RunStatus(out, "failed", f"{event} (its OOD / shift evaluation; training finished: {numbers})")
        if event:
            return RunStatus(out, "stopped", f"{event} (its OOD / shift evaluation; training finished: {numbers})")
        return RunStatus(out, "finished", f"{numbers}; no {EVALUATION} (not evaluated yet)")
    progress = read_progress(out)
    if holder:
        return RunStatus(out, "running", f"{progress_text(progress, True)} ({holder})")
    event = last_event(log_tail(out))
    if event and event.startswith(ERROR_PREFIXES):
        return RunStatus(out, "failed", event)
    where = progress_text(progress, False) if progress else (
        "training finished, results not written" if final_model_path(out) else
        "checkpoint present" if (out / CHECKPOINT).exists() else "nothing trained yet")
    if event:
        return RunStatus(out, "stopped", f"{event}")
    return RunStatus(out, "stopped", f"no process holds its lock (killed?): {where}; re-running resumes it")


# --------------------------------------------------------------------------------------------
# many runs
# --------------------------------------------------------------------------------------------

RUN_MARKERS = (METRICS, RESOLVED_CONFIG, CHECKPOINT, LOG_FILE, PROGRESS)


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` if it is a run directory, else every run directory under it (a folder holding run files),
    following symbolic links to directories (run directories on another disk); each directory is visited once,
    under the first path that reaches it, so that links into a folder already seen (or cycles) add nothing."""
    if any((root / m).exists() for m in RUN_MARKERS):
        return [root]
    found, seen = [], set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories.sort()
        if any(m in files for m in RUN_MARKERS):
            found.append(Path(directory))
    return sorted(found)


def grid_runs(config_path: str) -> tuple[list[Path], dict[str, dict]]:
    """The run dirs of a workflow config's grid and the run config each path expects."""
    from .config import coerce_numbers, load_yaml
    repo = Path(__file__).resolve().parents[1]
    if str(repo / "workflow" / "scripts") not in sys.path:
        sys.path.insert(0, str(repo / "workflow" / "scripts"))
    import grid
    config = coerce_numbers(load_yaml(config_path))
    specs = grid.run_grid(config)
    root = grid.runs_root(config)
    return [root / path for path in sorted(specs)], {path: grid.expected_values(config, s) for path, s in specs.items()}


def collect(args) -> tuple[list[Path], dict | None]:
    if args.config:
        dirs, expected = grid_runs(args.config)
        if args.paths:
            dirs = [Path(p) for p in args.paths]
        return dirs, expected
    if not args.paths:
        raise UserError("ssvi status needs a workflow config (--config config/config.yaml) or run directories / "
                        "a results folder to search (ssvi status results/runs)")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UserError(f"{', '.join(missing)} does not exist; name run directories or a results folder")
    return [d for p in args.paths for d in find_run_dirs(Path(p))], None


def status_command(args) -> int:
    dirs, expected = collect(args)
    statuses = [run_status(d, expected, args.full) for d in dirs]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    print(f"{len(statuses)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    shown = [s for s in statuses if s.state in FAILING] if args.failed else statuses
    width = max((len(str(s.run_dir)) for s in shown), default=0)
    for status in shown:
        print(status.line(width))
    return 1 if any(s.state in FAILING for s in statuses) else 0


def verify_command(paths: list[str]) -> int:
    """The full SHA-256 pass: one line per damaged file, a summary; exit 1 when anything is damaged."""
    dirs = []
    for path in map(Path, paths):
        if path.is_file():
            dirs += grid_runs(str(path))[0]
        elif path.is_dir():
            dirs += find_run_dirs(path)
        else:
            raise UserError(f"{path} does not exist; name run directories, results folders or a workflow config")
    finished = [d for d in dirs if (d / METRICS).exists() or (d / FINAL_RECORD).exists()]
    damaged = [damage for d in finished for damage in damaged_files(d, full=True)]
    unrecorded = [d for d in finished if not _has_records(d)]
    for damage in damaged:
        print(f"damaged: {damage.message()}")
    for d in unrecorded:
        print(f"unverifiable: {d} was made before result files were recorded (no '{FILES_KEY}' in {METRICS})")
    print(f"verified {len(finished)} finished run(s) (SHA-256 of every recorded result file, the final model of runs "
          f"not yet evaluated included): {len(damaged)} damaged file(s), {len(unrecorded)} run(s) without records")
    return 1 if damaged else 0


def _has_records(out: Path) -> bool:
    if not (out / METRICS).exists():
        return True  # training finished, not evaluated: final_model.json records its model
    try:
        return bool(read_metrics(out).get(FILES_KEY))
    except DamagedRunError:
        return True  # reported as damaged already
