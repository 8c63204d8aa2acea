"""Command line of ssvi-bench.

    python -m ssvi train --config run.yaml --out results/runs/demo [--set key=value ...]
    python -m ssvi train --out /tmp/run --set method=ssvi --set epochs=5 --set width=0.25
    python -m ssvi options            # every run-config key, its default and meaning

Re-running ``train`` with the same ``--out`` resumes from the last epoch checkpoint; a finished run
(its ``metrics.json`` exists) is reported and not redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "options":
        print(config_help())
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stdout)
    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        cfg = load_config(args.config, overrides) if args.config else RunConfig.from_dict(overrides)
    except ConfigError as error:
        print(f"ssvi: config error: {error}", file=sys.stderr)
        return 2
    from .trainer import run  # heavy imports only once the config is known to be good
    run(cfg, args.out)
    return 0
