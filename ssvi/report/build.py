"""Every table and claim from a set of runs, and the files they are written to.

Takes a workflow config and run dirs (``ssvi.report.runs.load_runs``); gives ``build_tables`` (every
``Table`` and the claims) and ``aggregate``, which writes into ``out``: ``<table>.csv/.md/.tex`` for every
table, ``runs.csv`` (one row per run: identity, metrics, train time, device, evaluated, stale) and
``claims.json`` (every comparison behind every verdict). Every caption ends with the runs missing from
the grid (--allow-missing) and the stale runs included (--allow-stale).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .claims import ClaimData, evaluate_claims
from .evaltables import ood_per_run, ood_stats, ood_table, shift_per_run, shift_tables
from .overlap import overlap_tables
from .paper import DEFAULT_EXPECTED, comparison_table, load_expected, paper_comparison
from .render import Table, caption, write_table
from .runs import EVAL_FILE, Evaluations, RunSet, load_evaluations, load_runs
from .select import ablation_runs, main_cells, robustness_runs
from .stats import VERDICT_RULE, WELCH_NOTE
from .tables import (criteria_table, density_sweep_table, main_stats, main_table, robustness_tables,
                     schedule_table)

log = logging.getLogger("aggregate")

CLAIM_COLUMNS = ["claim", "statement", "verdict", "effect", "ci_low", "ci_high", "n_a", "n_b", "summary",
                 "definition", "test"]


def claims_table(claims: list[dict], n_runs: int, ns) -> Table:
    data = pd.DataFrame([{k: c[k] for k in CLAIM_COLUMNS} for c in claims], columns=CLAIM_COLUMNS)
    display = data[["claim", "statement", "verdict", "summary", "definition"]].rename(columns={"summary": "numbers"})
    text = (f"Claims of the paper (reference section 7) checked on {n_runs} finished runs: verdict, the deciding "
            f"comparison (effect [95% interval], n per side: n_a/n_b), the exact rule. {WELCH_NOTE}; "
            f"{VERDICT_RULE}. CSV: effect, ci_low, ci_high, n_a, n_b of the deciding comparison")
    return Table("claims", data, display, caption(text, ns))


def claim_data(runs: pd.DataFrame, evals: Evaluations, config: dict) -> ClaimData:
    return ClaimData(main=main_cells(runs), criteria=ablation_runs(runs, config),
                     robustness=robustness_runs(runs, config), ood=ood_per_run(runs, evals),
                     shift=shift_per_run(runs, evals), ood_skipped=bool(evals.ood_not_evaluated),
                     shift_skipped=bool(evals.shift_not_evaluated))


def build_tables(runs: pd.DataFrame, config: dict, expected_path=DEFAULT_EXPECTED,
                 evals: Evaluations | None = None) -> tuple[list[Table], list[dict]]:
    """Every table and the claims; ``evals`` = the runs' ood_shift.json (read here when None)."""
    evals = load_evaluations(runs) if evals is None else evals
    stats = main_stats(runs, config)
    expected, tolerances = load_expected(expected_path)
    comparison = paper_comparison(stats, expected, tolerances)
    criteria = criteria_table(runs, config)
    ood = ood_stats(runs, evals, config)
    claims = evaluate_claims(claim_data(runs, evals, config), config)
    tables = [main_table(stats, comparison), comparison_table(comparison), density_sweep_table(stats), criteria,
              *overlap_tables(runs, config), *robustness_tables(runs, config), schedule_table(runs, config),
              ood_table(ood, evals, runs), *shift_tables(runs, evals, config),
              claims_table(claims, len(runs), stats["n"])]
    return tables, claims


def with_notes(tables: list[Table], run_set: RunSet) -> list[Table]:
    notes = run_set.notes()
    for table in tables:
        if notes:
            table.caption = f"{table.caption} {notes}."
    return tables


def aggregate(config: dict, out, run_dirs=None, expected=DEFAULT_EXPECTED, allow_missing: bool = False,
              require_eval: bool = False, allow_stale: bool = False) -> dict[str, Table]:
    """Load the runs and their ood_shift.json, write every table (+ runs.csv, claims.json) into ``out``;
    return {name: Table}. Raises MissingRunsError, StaleRunsError, MissingEvalError, EvalFileError."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_set = load_runs(config, run_dirs, allow_missing, allow_stale)
    runs = run_set.runs
    evals = load_evaluations(runs, require_eval)
    runs["evaluated"] = [(Path(d) / EVAL_FILE).is_file() for d in runs["run_dir"]]
    tables, claims = build_tables(runs, config, expected, evals)
    with_notes(tables, run_set)
    runs.to_csv(out / "runs.csv", index=False)
    for table in tables:
        write_table(table, out)
    (out / "claims.json").write_text(json.dumps(
        {"n_runs": len(runs), "config": config.get("claims", {}), "missing_runs": run_set.missing,
         "stale_runs": run_set.stale, "claims": claims}, indent=1, default=_json_default))
    log.info("%d runs -> %d tables in %s", len(runs), len(tables), out)
    return {t.name: t for t in tables}


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")
