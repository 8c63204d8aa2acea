"""Command line of ssvi-bench.

    python -m ssvi train --config run.yaml --out results/runs/demo [--set key=value ...]
    python -m ssvi train --out /tmp/run --set method=ssvi --set epochs=5 --set width=0.25
    python -m ssvi train --out DIR ... --evaluate [--skip NAME ...]  # then OOD and shift, same process
    python -m ssvi options            # every run-config key, its default and meaning
    python -m ssvi evaluate --run DIR [--skip NAME ...]   # OOD detection and distribution shift of a finished run
    python -m ssvi status --config config/config.yaml   # one line per run of a grid (or: status RESULTS_DIR)
    python -m ssvi verify RESULTS_DIR   # the full SHA-256 pass over every finished run's result files
    python -m ssvi data --dataset cifar10 --data-dir data [--download]   # or svhn, cifar100, cifar10c
    python -m ssvi export --run DIR   # compact sparse copy of a run's model (ssvi.export; --help there)
    python -m ssvi bench ...          # training-step and evaluation benchmark (ssvi.bench; --help there)

Re-running ``train`` with the same ``--out`` resumes from the last epoch checkpoint; a finished run whose
result files are whole is reported and not redone. A run directory holding another configuration is
refused, or deleted and started afresh with ``--restart-on-config-change``. ``train --evaluate`` holds the
run's lock from the start of training to the end of its evaluation.

Errors a user can fix (``ssvi.errors.UserError``) print one line ``ssvi: error: <cause and fix>``, also
appended to the run's ``train.log``, and exit with status 2, for every subcommand; ``ssvi --debug ...``
shows their traceback instead. A full disk is such an error. Ctrl-C and SIGTERM print one line saying
where the run stopped and what re-running resumes from (also appended to ``train.log``) and exit 130 / 143.
Output into a pipe that was closed (``ssvi status | head -1``) ends the command quietly, exit 141 (SIGPIPE).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path

from .config import RunConfig, load_config, parse_override
from .errors import Interrupted, Terminated, UserError, signal_of
from .status import add_status_arguments

# the option naming the run directory whose train.log also gets a command's error line
RUN_DIRECTORY_OPTION = {"train": "--out", "evaluate": "--run", "export": "--run"}
KEEP_PROBS_HELP = ("also keep the per-set probabilities ensembles are scored from (eval_probs.pt, recorded in "
                   "ood_shift.json; the workflow asks it of ensemble members)")


def config_help() -> str:
    lines = []
    for f in dataclasses.fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<18} {default!r:<16} {f.metadata.get('help', '')}")
    return "run-config keys (YAML file or --set key=value), default, meaning:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors that are otherwise one line (anywhere on the command line)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate one run", epilog=config_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="YAML run config (keys below); omitted = all defaults")
    train.add_argument("--out", required=True, help="result directory (resumed if it holds a checkpoint)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key (repeatable); the value is parsed as YAML")
    train.add_argument("--quiet", action="store_true", help="only warnings and errors")
    train.add_argument("--restart-on-config-change", action="store_true",
                       help="if --out holds a run with another configuration, delete its files and start fresh "
                            "(default: refuse)")
    train.add_argument("--evaluate", action="store_true",
                       help="then, in the same process, evaluate OOD detection and distribution shift as "
                            "`ssvi evaluate` does (its data are checked before training starts)")
    train.add_argument("--skip", action="append", default=[], metavar="NAME",
                       help="with --evaluate: an OOD or shift set not to evaluate (repeatable)")
    train.add_argument("--keep-probs", action="store_true", help="with --evaluate: " + KEEP_PROBS_HELP)
    commands.add_parser("options", help="list every run-config key with its default")
    evaluate = commands.add_parser("evaluate", help="OOD detection and distribution shift of a finished run")
    evaluate.add_argument("--run", required=True, help="finished run directory (holds metrics.json and model.pt)")
    evaluate.add_argument("--data-dir", help="data directory (default: the run's own data_dir)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: the run config's threads)")
    evaluate.add_argument("--keep-probs", action="store_true", help=KEEP_PROBS_HELP)
    evaluate.add_argument("--skip", action="append", default=[], metavar="NAME",
                          help="an OOD or shift set not to evaluate (repeatable; listed under not_evaluated); "
                               "without it a set whose data are missing is an error")
    data = commands.add_parser("data", help="prepare/verify a dataset in the data directory (run on a login node)")
    data.add_argument("--dataset", required=True,
                      help="digits, cifar10, cifar100, svhn, or cifar10c (CIFAR-10-C's .npy files: verified only)")
    data.add_argument("--data-dir", default="data", help="data directory (default: data)")
    data.add_argument("--download", action="store_true",
                      help="download missing files with torchvision (needs internet; CIFAR-10-C is fetched by hand)")
    data.add_argument("--record", help="write a JSON summary of the verified dataset here")
    status = commands.add_parser("status", help="one line per run of a workflow config or results directory")
    add_status_arguments(status)
    verify = commands.add_parser("verify", help="check every finished run's result files against their "
                                               "recorded sizes and SHA-256")
    verify.add_argument("paths", nargs="+", metavar="PATH",
                        help="run directories, results directories (searched for runs) or workflow configs")
    # listed for --help only: main() hands these to their modules' own parsers
    commands.add_parser("export", add_help=False, help="compact sparse copy of a run's model (ssvi export --help)")
    commands.add_parser("bench", add_help=False, help="training-step and evaluation benchmark (ssvi bench --help)")
    return parser


def prepare_data(args: argparse.Namespace) -> int:
    from .data import verify_dataset
    summary = verify_dataset(args.dataset, args.data_dir, download=args.download)
    print(json.dumps(summary))
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(summary, indent=1))
    return 0


def _delegated(command: str):
    """Commands with their own argument parsers, in their own modules."""
    if command == "export":
        from .export import main as export_main
        return export_main
    if command == "bench":
        from .bench import main as bench_main
        return bench_main
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    previous = _catch_sigterm()
    try:
        code = run_command(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then one more case below
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except UserError as error:
        if debug:
            raise
        return _one_line(argv, f"ssvi: error: {error}", 2)
    except Interrupted as error:
        return _one_line(argv, f"ssvi: {error}", 128 + error.signum)
    except (KeyboardInterrupt, Terminated) as error:
        signum = signal_of(error)
        return _one_line(argv, f"ssvi: interrupted by {signal.Signals(signum).name} before a run started; "
                               "nothing was written", 128 + signum)
    except Exception as error:  # a bug: keep its traceback, and leave its name where `ssvi status` looks
        append_to_train_log(run_directory(argv), f"ssvi: crashed: {type(error).__name__}: {error} (a bug: the "
                                                 "traceback is on stderr)".splitlines()[0])
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _catch_sigterm():
    """SIGTERM raises Terminated (as SIGINT raises KeyboardInterrupt); None where signals cannot be caught
    (main() called from another thread than the main one)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        return None


def _closed_pipe() -> int:
    """The reader of stdout went away (``| head``): what is left unwritten goes nowhere, quietly, as for any Unix
    tool killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def _raise_terminated(signum, frame):
    raise Terminated()


def _one_line(argv: list[str], line: str, code: int) -> int:
    print(line, file=sys.stderr)
    append_to_train_log(run_directory(argv), line)
    return code


def run_directory(argv: list[str]) -> Path | None:
    """The run directory a command line names (``train --out``, ``evaluate --run``, ``export --run``)."""
    option = RUN_DIRECTORY_OPTION.get(argv[0]) if argv else None
    if option is None:
        return None
    for arg, following in zip(argv, argv[1:] + [None]):
        if arg == option and following is not None:
            return Path(following)
        if arg.startswith(option + "="):
            return Path(arg.split("=", 1)[1])
    return None


def append_to_train_log(directory: Path | None, line: str) -> None:
    """Append ``line`` to ``directory/train.log`` in the trainer's log format, if the directory exists."""
    if directory is None or not directory.is_dir():
        return
    record = logging.makeLogRecord({"msg": line})
    try:
        with open(directory / "train.log", "a") as log_file:
            log_file.write(logging.Formatter("%(asctime)s %(message)s").format(record) + "\n")
    except OSError:
        pass  # a read-only run directory: the line is on stderr anyway


def run_command(argv: list[str]) -> int:
    if argv and (delegate := _delegated(argv[0])):
        return delegate(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "options":
        print(config_help())
        return 0
    if args.command == "data":
        return prepare_data(args)
    console = logging.StreamHandler(sys.stdout)  # --quiet: only warnings on the console; train.log gets everything
    console.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[console])
    if args.command == "status":
        from .status import status_command
        return status_command(args)
    if args.command == "verify":
        from .status import verify_command
        return verify_command(args.paths)
    if args.command == "evaluate":
        from .shift import evaluate_run
        evaluate_run(args.run, args.data_dir, args.device, skip=args.skip, threads=args.threads,
                     keep_probs=args.keep_probs)
        return 0
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_config(args.config, overrides) if args.config else RunConfig.from_dict(overrides)
    from .packages import check_installed
    check_installed({args.out: cfg})
    if (args.skip or args.keep_probs) and not args.evaluate:
        raise UserError("--skip and --keep-probs only apply with --evaluate; add --evaluate or drop them")
    from .rundir import make_run_directory, run_directory_lock
    from .trainer import run  # heavy imports only once the config is known to be good
    if args.evaluate:  # fail before training, not after it, when evaluation data are missing
        from .shift import check_evaluation_data, check_skip
        check_skip(args.skip)
        check_evaluation_data(cfg.dataset, cfg.data_dir, args.skip)
    out = Path(args.out)
    make_run_directory(out)
    with run_directory_lock(out, "ssvi train" + (" --evaluate" if args.evaluate else "")):  # one lock, whole job
        evaluated = []  # the run, when it was evaluated in this process: the OOD / shift evaluation goes on from it
        run(cfg, out, restart_on_config_change=args.restart_on_config_change, evaluated=evaluated)
        if args.evaluate:
            from .shift import evaluate_run
            evaluate_run(out, cfg.data_dir, cfg.device, skip=args.skip, threads=cfg.threads,
                         keep_probs=args.keep_probs, live=evaluated[0] if evaluated else None)
    return 0
