"""Every table and claim from a set of runs, and the files they are written to.

Takes a workflow config and run dirs (``ssvi.report.runs.load_runs``, each run's result files checked) and
builds the config's ensembles from them (``ssvi.report.ensembles``); gives ``build_tables`` (every ``Table``
and the claims: the paper's and the benchmark's questions) and ``aggregate``, which writes into ``out``:
``<table>.csv/.md/.tex`` for every table of TABLE_NAMES, ``runs.csv`` (one row per run and ensemble:
identity, metrics, views, train time, device, evaluated, stale) and ``claims.json`` (every comparison behind
every verdict, with the seeds-needed projection of inconclusive ones). Every caption ends with the runs
missing from the grid (--allow-missing), the stale runs included (--allow-stale) and ensembles left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..files import DiskFullError, make_directory, write_json, write_text
from .benchmark import QUESTIONS
from .claims import BENCHMARK, ORDER, ClaimData, evaluate_claims, interval_text
from .columns import INCONCLUSIVE
from .curves import reliability_table, risk_coverage_table
from .ensembles import build_ensembles
from .evaltables import ood_per_run, ood_stats, ood_table, shift_per_run, shift_tables
from .overlap import overlap_tables
from .paper import DEFAULT_EXPECTED, comparison_table, load_expected, paper_comparison
from .render import Table, caption, write_table
from .runs import EVAL_FILE, Evaluations, RunSet, load_evaluations, load_runs
from .select import ablation_runs, main_cells, robustness_runs
from .stats import PROJECTION_NOTE, VERDICT_RULE, WELCH_NOTE
from .tables import (calibrated_table, criteria_table, density_sweep_table, main_stats, main_table, robustness_tables,
                     schedule_table)

log = logging.getLogger("aggregate")

CLAIM_COLUMNS = ["claim", "source", "statement", "verdict", "effect", "ci_low", "ci_high", "n_a", "n_b",
                 "seeds_needed", "projection", "summary", "definition", "test"]
TABLE_NAMES = ["main", "calibrated", "paper_comparison", "density_sweep", "criteria", "criteria_vs_mean",
               *[f"{kind}_{stage}" for kind in ("iou", "spearman") for stage in ("start", "middle", "end")],
               "robustness", "robustness_spread", "schedule_ablation", "ood", "shift", "shift_corruptions",
               "reliability", "risk_coverage", "claims", "undecided"]
EXTRA_FILES = ["runs.csv", "claims.json"]


def claims_table(claims: list[dict], n_runs: int, ns) -> Table:
    data = pd.DataFrame([{k: c[k] for k in CLAIM_COLUMNS} for c in claims], columns=CLAIM_COLUMNS)
    display = data[["claim", "statement", "verdict", "summary", "projection", "definition"]].rename(
        columns={"summary": "numbers", "projection": "seeds per side to decide (projection)"})
    display["claim"] = [f"{c} (benchmark)" if source == BENCHMARK else c for c, source in zip(data["claim"],
                                                                                              data["source"])]
    text = (f"Claims of the paper (reference section 7; C5-calibrated extends C5) and the benchmark's own questions "
            f"(B1, B2, marked 'benchmark': not the paper's claims) checked on {n_runs} finished runs and ensembles: "
            f"verdict, the deciding comparison (effect [95% interval], n per side: n_a/n_b), for an inconclusive "
            f"verdict the seeds per side that would decide it, the exact rule. {WELCH_NOTE}; {VERDICT_RULE}. "
            f"{PROJECTION_NOTE}. CSV: effect, ci_low, ci_high, n_a, n_b, seeds_needed of the deciding comparison; "
            f"table undecided: every inconclusive comparison")
    return Table("claims", data, display, caption(text, ns))


UNDECIDED_COLUMNS = ["claim", "what", "effect", "ci_low", "ci_high", "n_a", "n_b", "bound", "seeds_needed", "projection"]


def undecided_table(claims: list[dict], ns) -> Table:
    """Every inconclusive comparison of every claim, with the seeds per side that would decide it."""
    rows = [{"claim": c["claim"], **{k: comparison.get(k) for k in UNDECIDED_COLUMNS[1:]}}
            for c in claims for comparison in c["numbers"] if comparison["verdict"] == INCONCLUSIVE]
    data = pd.DataFrame(rows, columns=UNDECIDED_COLUMNS)
    display = pd.DataFrame({
        "claim": data["claim"], "comparison": data["what"],
        "effect [95% interval]": [interval_text(r) for r in rows],
        "bound": data["bound"], "seeds per side to decide (projection)": data["projection"]})
    text = (f"Every inconclusive comparison behind the claims and questions, and how many seeds would settle it. "
            f"{PROJECTION_NOTE}")
    return Table("undecided", data, display, caption(text, ns))


def claim_data(runs: pd.DataFrame, evals: Evaluations, config: dict) -> ClaimData:
    return ClaimData(main=main_cells(runs), criteria=ablation_runs(runs, config),
                     robustness=robustness_runs(runs, config), ood=ood_per_run(runs, evals),
                     shift=shift_per_run(runs, evals), ood_skipped=bool(evals.ood_not_evaluated),
                     shift_skipped=bool(evals.shift_not_evaluated))


def build_tables(runs: pd.DataFrame, config: dict, expected_path=DEFAULT_EXPECTED,
                 evals: Evaluations | None = None, curves: dict | None = None) -> tuple[list[Table], list[dict]]:
    """Every table and the claims; ``evals`` = the runs' ood_shift.json (read here when None); ``curves`` =
    run dir -> its curves (ssvi.report.runs.RunSet.curves)."""
    evals = load_evaluations(runs) if evals is None else evals
    curves = curves or {}
    stats = main_stats(runs, config)
    expected, tolerances = load_expected(expected_path)
    comparison = paper_comparison(stats, expected, tolerances)
    criteria = criteria_table(runs, config)
    ood = ood_stats(runs, evals, config)
    claims = evaluate_claims(claim_data(runs, evals, config), config, ORDER + QUESTIONS)
    tables = [main_table(stats, comparison), calibrated_table(stats), comparison_table(comparison),
              density_sweep_table(stats), criteria, *overlap_tables(runs, config), *robustness_tables(runs, config),
              schedule_table(runs, config), ood_table(ood, evals, runs), *shift_tables(runs, evals, config),
              reliability_table(runs, curves, config), risk_coverage_table(runs, curves, config),
              claims_table(claims, len(runs), stats["n"]), undecided_table(claims, stats["n"])]
    return tables, claims


def with_notes(tables: list[Table], run_set: RunSet, extra: list[str] = ()) -> list[Table]:
    notes = ". ".join([n for n in (run_set.notes(), *extra) if n])
    for table in tables:
        if notes:
            table.caption = f"{table.caption} {notes}."
    return tables


def aggregate(config: dict, out, run_dirs=None, expected=DEFAULT_EXPECTED, allow_missing: bool = False,
              require_eval: bool = False, allow_stale: bool = False) -> dict[str, Table]:
    """Load the runs and their ood_shift.json, write every table (+ runs.csv, claims.json) into ``out``;
    return {name: Table}. Raises MissingRunsError, StaleRunsError, MissingEvalError, EvalFileError."""
    out = make_directory(out)
    run_set = load_runs(config, run_dirs, allow_missing, allow_stale)
    evals = load_evaluations(run_set.runs, require_eval)
    run_set.runs["evaluated"] = [(Path(d) / EVAL_FILE).is_file() for d in run_set.runs["run_dir"]]
    ensembles, ensemble_evals, ensemble_notes = build_ensembles(config, run_set)
    for note in ensemble_notes:
        log.warning(note)
    runs = pd.concat([run_set.runs, ensembles.assign(evaluated=False)], ignore_index=True) \
        if not ensembles.empty else run_set.runs
    evals.ood = pd.concat([evals.ood, ensemble_evals.ood], ignore_index=True) if not ensemble_evals.ood.empty \
        else evals.ood
    evals.shift = pd.concat([evals.shift, ensemble_evals.shift], ignore_index=True) \
        if not ensemble_evals.shift.empty else evals.shift
    tables, claims = build_tables(runs, config, expected, evals, run_set.curves)
    with_notes(tables, run_set, ensemble_notes)
    try:
        write_text(out / "runs.csv", runs.to_csv(index=False))
        for table in tables:
            write_table(table, out)
        write_json(out / "claims.json", {"n_runs": len(runs), "config": config.get("claims", {}),
                                         "missing_runs": run_set.missing, "stale_runs": run_set.stale,
                                         "ensembles_left_out": ensemble_notes, "claims": claims})
    except DiskFullError as error:
        raise error.advise("the aggregation writes every table again") from None
    log.info("%d runs and ensembles -> %d tables in %s", len(runs), len(tables), out)
    return {t.name: t for t in tables}
