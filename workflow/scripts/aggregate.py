"""Tables and claim verdicts from finished runs: the command line over ``ssvi.report`` (see its package
docstring for the stages). Reads result files only (metrics.json, subspace.json, ood_shift.json); never
trains.

    python workflow/scripts/aggregate.py --config config/config.yaml --out results/tables [RUN_DIR ...]
        [--expected results/expected/paper.yaml] [--allow-missing] [--allow-stale] [--require-eval] [--threads N]
        [--config-sha256 HEX]

Without RUN_DIRs every run of the config's grid (``workflow/scripts/grid.py``) is read from
``<results_dir>/runs``. A run dir without ``metrics.json`` is an error naming it, unless
``--allow-missing`` (the captions then list what is missing). A run whose recorded config differs from
the one the grid expects for its path is an error naming the run and the keys, unless ``--allow-stale``
(then it is included and counted in column n_stale). A finished run's ``ood_shift.json`` is read when
present; a run without it has no OOD / shift values, unless ``--require-eval``, which makes it an error.

Every run's recorded result files are checked first (sizes; a damaged file is one error naming it and the
fix). Views a run's metrics.json predates (adaptive ECE, AURC, AUGRC, temperature scaling, curves) are
recomputed from its predictions.pt, and the config's ensembles are built from their members' stored
predictions, on ``--threads`` CPU threads.

Each table ``<name>`` is written as ``<name>.csv`` (the numbers: mean, std, 95% interval, n), ``<name>.md``
and ``<name>.tex`` ("mean ± std" cells under a caption); plus ``runs.csv`` and ``claims.json``. Tables:
ssvi.report.build.TABLE_NAMES (main, calibrated, paper_comparison, density_sweep, criteria, criteria_vs_mean,
iou_/spearman_{start,middle,end}, robustness, robustness_spread, schedule_ablation, ood, shift,
shift_corruptions, reliability, risk_coverage, claims, undecided).
Every file is written atomically (``ssvi.files``). Exit code 2 with one ``aggregate: error: ...`` message for a
user error: a damaged run, a full or read-only file system, or (``--config-sha256``, which the workflow passes)
a ``--config`` file that is not the workflow's current resolved config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ssvi.config import coerce_numbers, load_yaml  # noqa: E402
from ssvi.errors import UserError  # noqa: E402
from ssvi.report.build import aggregate  # noqa: E402
from ssvi.report.paper import DEFAULT_EXPECTED  # noqa: E402
from ssvi.report.runs import EVAL_FILE  # noqa: E402


def check_config_digest(path: str, expected: str | None) -> None:
    """The workflow's resolved config must be the one it wrote for the current config (not a stale copy that
    Snakemake had no record of)."""
    if expected and Path(path).is_file() and hashlib.sha256(Path(path).read_bytes()).hexdigest() != expected:
        raise UserError(f"{path} is not this workflow's current config (written for another config); regenerate "
                        f"it: delete it, or add --forcerun resolved_config to the snakemake command")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="workflow config (YAML or JSON), e.g. config/config.yaml")
    parser.add_argument("--out", default="results/tables", help="output folder of the tables")
    parser.add_argument("--expected", type=Path, default=None,
                        help=f"the paper's values, null = not filled (default: {DEFAULT_EXPECTED.relative_to(REPO)})")
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip run dirs without metrics.json (the captions list them)")
    parser.add_argument("--allow-stale", action="store_true",
                        help="include runs whose recorded config differs from the grid's (marked in the tables)")
    parser.add_argument("--require-eval", action="store_true",
                        help=f"a finished run without {EVAL_FILE} (python -m ssvi evaluate) is an error naming it "
                             "(default: such runs just have no OOD / shift values)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of the recomputations (default: torch's choice)")
    parser.add_argument("--config-sha256", metavar="HEX",
                        help="refuse a --config file whose SHA-256 differs (the workflow's check of a stale copy)")
    parser.add_argument("run_dirs", nargs="*", help="finished run dirs (default: every run of the config's grid)")
    args = parser.parse_args(argv)
    if args.expected is not None and not args.expected.is_file():
        parser.error(f"--expected {args.expected} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        check_config_digest(args.config, args.config_sha256)
        config = coerce_numbers(load_yaml(args.config))  # YAML or JSON; "1e-3" read as a number
        tables = aggregate(config, args.out, args.run_dirs or None, args.expected or DEFAULT_EXPECTED,
                           args.allow_missing, args.require_eval, args.allow_stale)
    except UserError as err:
        print(f"aggregate: error: {err}", file=sys.stderr)
        return 2
    for claim in json.loads((Path(args.out) / "claims.json").read_text())["claims"]:
        print(f"{claim['claim']}: {claim['verdict']:16s} {claim['summary']}")
    print(f"wrote {len(tables)} tables (csv, md, tex) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
