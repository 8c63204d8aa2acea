"""Command line of ssvi-bench.

    python -m ssvi train --config run.yaml --out results/runs/demo [--set key=value ...]
    python -m ssvi train --out /tmp/run --set method=ssvi --set epochs=5 --set width=0.25
    python -m ssvi options            # every run-config key, its default and meaning
    python -m ssvi evaluate --run DIR # OOD detection and distribution shift of a finished run
    python -m ssvi data --dataset cifar10 --data-dir data [--download]
    python -m ssvi export --run DIR   # compact sparse copy of a run's model (ssvi.export; --help there)
    python -m ssvi bench ...          # training-step and evaluation benchmark (ssvi.bench; --help there)

Re-running ``train`` with the same ``--out`` resumes from the last epoch checkpoint; a finished run
(its ``metrics.json`` exists) is reported and not redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, load_config, parse_override


def config_help() -> str:
    lines = []
    for f in dataclasses.fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<18} {default!r:<16} {f.metadata.get('help', '')}")
    return "run-config keys (YAML file or --set key=value), default, meaning:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate one run", epilog=config_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="YAML run config (keys below); omitted = all defaults")
    train.add_argument("--out", required=True, help="result directory (resumed if it holds a checkpoint)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key (repeatable); the value is parsed as YAML")
    train.add_argument("--quiet", action="store_true", help="only warnings and errors")
    commands.add_parser("options", help="list every run-config key with its default")
    evaluate = commands.add_parser("evaluate", help="OOD detection and distribution shift of a finished run")
    evaluate.add_argument("--run", required=True, help="finished run directory (holds metrics.json and model.pt)")
    evaluate.add_argument("--data-dir", help="data directory (default: the run's own data_dir)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    data = commands.add_parser("data", help="prepare/verify a dataset in the data directory (run on a login node)")
    data.add_argument("--dataset", required=True, help="registered dataset name (digits, cifar10, cifar100, svhn)")
    data.add_argument("--data-dir", default="data", help="data directory (default: data)")
    data.add_argument("--download", action="store_true", help="download missing files (needs internet)")
    data.add_argument("--record", help="write a JSON summary of the verified dataset here")
    return parser


def prepare_data(args: argparse.Namespace) -> int:
    from .data import DataMissingError, load_dataset
    try:
        data = load_dataset(args.dataset, args.data_dir, download=args.download)
    except (DataMissingError, ValueError) as error:
        print(f"ssvi: {error}", file=sys.stderr)
        return 1
    summary = {"dataset": data.name, "data_dir": str(args.data_dir), "train": len(data.y_train),
               "test": len(data.y_test), "num_classes": data.num_classes, "shape": list(data.x_train.shape[1:])}
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
    argv = sys.argv[1:] if argv is None else argv
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
        evaluate_run(args.run, args.data_dir, args.device)
        return 0
    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        cfg = load_config(args.config, overrides) if args.config else RunConfig.from_dict(overrides)
    except ConfigError as error:
        print(f"ssvi: config error: {error}", file=sys.stderr)
        return 2
    from .trainer import run  # heavy imports only once the config is known to be good
    run(cfg, args.out)
    return 0
