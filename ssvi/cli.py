"""Command line of ssvi-bench.

    python -m ssvi train --config run.yaml --out results/runs/demo [--set key=value ...]
    python -m ssvi train --out /tmp/run --set method=ssvi --set epochs=5 --set width=0.25
    python -m ssvi train --out DIR ... --evaluate [--skip NAME ...]  # then OOD and shift, same process
    python -m ssvi options            # every run-config key, its default and meaning
    python -m ssvi evaluate --run DIR [--skip NAME ...]   # OOD detection and distribution shift of a finished run
    python -m ssvi data --dataset cifar10 --data-dir data [--download]   # or svhn, cifar100, cifar10c
    python -m ssvi export --run DIR   # compact sparse copy of a run's model (ssvi.export; --help there)
    python -m ssvi bench ...          # training-step and evaluation benchmark (ssvi.bench; --help there)

Re-running ``train`` with the same ``--out`` resumes from the last epoch checkpoint; a finished run
(its ``metrics.json`` exists) is reported and not redone. A run directory holding another configuration
is refused, or deleted and started afresh with ``--restart-on-config-change``.

Errors a user can fix (``ssvi.errors.UserError``) print one line ``ssvi: error: <cause and fix>``, also
appended to the run's ``train.log``, and exit with status 2, for every subcommand; ``ssvi --debug ...``
shows their traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .config import RunConfig, load_config, parse_override
from .errors import UserError

# the option naming the run directory whose train.log also gets a command's error line
RUN_DIRECTORY_OPTION = {"train": "--out", "evaluate": "--run", "export": "--run"}


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
    commands.add_parser("options", help="list every run-config key with its default")
    evaluate = commands.add_parser("evaluate", help="OOD detection and distribution shift of a finished run")
    evaluate.add_argument("--run", required=True, help="finished run directory (holds metrics.json and model.pt)")
    evaluate.add_argument("--data-dir", help="data directory (default: the run's own data_dir)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
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
    try:
        return run_command(argv)
    except UserError as error:
        if debug:
            raise
        line = f"ssvi: error: {error}"
        print(line, file=sys.stderr)
        append_to_train_log(run_directory(argv), line)
        return 2


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
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stdout)
    if args.command == "evaluate":
        from .shift import evaluate_run
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        evaluate_run(args.run, args.data_dir, args.device, skip=args.skip)
        return 0
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_config(args.config, overrides) if args.config else RunConfig.from_dict(overrides)
    if args.skip and not args.evaluate:
        raise UserError("--skip only applies with --evaluate; add --evaluate or drop --skip")
    from .trainer import run  # heavy imports only once the config is known to be good
    if args.evaluate:  # fail before training, not after it, when evaluation data are missing
        from .shift import check_evaluation_data, check_skip
        check_skip(args.skip)
        check_evaluation_data(cfg.dataset, cfg.data_dir, args.skip)
    run(cfg, args.out, restart_on_config_change=args.restart_on_config_change)
    if args.evaluate:
        from .shift import evaluate_run
        evaluate_run(args.out, cfg.data_dir, cfg.device, skip=args.skip)
    return 0
