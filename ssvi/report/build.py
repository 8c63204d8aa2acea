"""Every table and claim from a set of runs, and the files they are written to.

Takes a workflow config and run dirs (``ssvi.report.runs.load_runs``, each run's result files checked) and
builds the config's ensembles from them (``ssvi.report.ensembles``); gives ``build_tables`` (every ``Table``
and the claims: the paper's and the benchmark's questions) and ``aggregate``, which writes into ``out``:
``<table>.csv/.md/.tex`` for every table of TABLE_NAMES, ``runs.csv`` (one row per run and ensemble:
identity, metrics, views, train time, device, evaluated, stale, flags) and ``claims.json`` (strict JSON: every
comparison behind every verdict, with its test, level and planning number; null where a number does not exist). Every caption ends with the runs
missing from the grid (--allow-missing), the stale runs included (--allow-stale) and ensembles left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..files import DiskFullError, make_directory, write_json, write_text
from .benchmark import QUESTIONS, declared_questions
from .claims import BENCHMARK, DECLARED, ORDER, ClaimData, evaluate_claims
from .columns import INCONCLUSIVE, NOT_TESTED
from .curves import reliability_table, risk_coverage_table
from .ensembles import build_ensembles
from .evaltables import ood_per_run, ood_stats, ood_table, shift_per_run, shift_tables
from .overlap import overlap_tables
from .paper import DEFAULT_EXPECTED, comparison_table, load_expected, paper_comparison
from .flags import flag_runs, rule as flag_rule
from .render import Table, caption, finite_frame, strict_json, write_table
from .runs import EVAL_FILE, Evaluations, RunSet, load_evaluations, load_runs
from .select import ablation_runs, main_cells, robustness_runs
from .stats import planning_note
from .verdicts import RULE, interval_text
from .tables import (calibrated_table, criteria_table, density_sweep_table, main_stats, main_table, robustness_tables,
                     schedule_table)

log = logging.getLogger("aggregate")

CLAIM_COLUMNS = ["claim", "source", "statement", "verdict", "k", "family", "tests", "effect", "ci_low", "ci_high", "n_a",
                 "n_b", "planning_seeds", "planning", "summary", "definition"]
TABLE_NAMES = ["main", "calibrated", "paper_comparison", "density_sweep", "criteria", "criteria_vs_mean",
               *[f"{kind}_{stage}" for kind in ("iou", "spearman") for stage in ("start", "middle", "end")],
               "robustness", "robustness_spread", "schedule_ablation", "ood", "shift", "shift_corruptions",
               "reliability", "risk_coverage", "claims", "undecided"]
EXTRA_FILES = ["runs.csv", "claims.json"]
SOURCE_MARK = {BENCHMARK: " (benchmark)", DECLARED: " (declared)"}


def claims_table(claims: list[dict], n_runs: int, ns, config: dict) -> Table:
    data = pd.DataFrame([{k: c[k] for k in CLAIM_COLUMNS} for c in claims], columns=CLAIM_COLUMNS)
    display = pd.DataFrame({
        "claim": [c + SOURCE_MARK.get(source, "") for c, source in zip(data["claim"], data["source"])],
        "statement": data["statement"], "verdict": data["verdict"],
        "k (tested)": data["k"], "family": data["family"], "numbers": data["summary"],
        "seeds per side to decide (planning)": data["planning"], "definition": data["definition"]})
    text = (f"Claims of the paper (reference section 7; C5-calibrated extends C5), the benchmark's own questions (B1, "
            f"B2, marked 'benchmark') and the config's declared questions (marked 'declared'), checked on {n_runs} "
            f"finished runs and ensembles (main seeds only): verdict, k = tested comparisons of the row and their "
            f"Bonferroni level, the deciding comparison (effect [interval], n per side in the order the phrase names "
            f"them, test, level), for an inconclusive verdict the planning number, the exact rule. {RULE}. "
            f"{planning_note('the same Bonferroni level')}. {flag_rule(config)}. CSV: the deciding comparison's "
            f"numbers (empty where there is none); claims.json: every comparison; table undecided: every inconclusive "
            f"or untested comparison")
    return Table("claims", data, display, caption(text, ns))


UNDECIDED_COLUMNS = ["claim", "what", "verdict", "effect", "ci_low", "ci_high", "n_a", "n_b", "test", "level", "bound",
                     "not_tested_because", "smallest_effect", "planning_seeds"]


def undecided_table(claims: list[dict], ns) -> Table:
    """Every inconclusive or untested comparison of every claim, with the seeds per side that would decide it."""
    rows = [{"claim": c["claim"], **{k: comparison.get(k) for k in UNDECIDED_COLUMNS[1:]}}
            for c in claims for comparison in c["numbers"] if comparison["verdict"] in (INCONCLUSIVE, NOT_TESTED)]
    data = pd.DataFrame(rows, columns=UNDECIDED_COLUMNS)
    display = pd.DataFrame({
        "claim": data["claim"], "comparison": data["what"], "verdict": data["verdict"],
        "effect [interval]": [interval_text(r) for r in rows], "bound": data["bound"],
        "seeds per side to decide (planning)": [
            r["not_tested_because"] if r["verdict"] == NOT_TESTED else
            f"{r['planning_seeds']}" if r["planning_seeds"] is not None else "unknown" for r in rows]})
    text = (f"Every comparison behind the claims and questions that decided nothing: inconclusive ones with the seeds "
            f"per side at which this comparison alone would be decided with probability 80% at its row's level, and "
            f"untested ones with the reason. {planning_note('its row’s Bonferroni level')}")
    return Table("undecided", data, display, caption(text, ns))


def claim_data(runs: pd.DataFrame, evals: Evaluations, config: dict) -> ClaimData:
    return ClaimData(main=main_cells(runs), criteria=ablation_runs(runs, config),
                     robustness=robustness_runs(runs, config), ood=ood_per_run(runs, evals),
                     shift=shift_per_run(runs, evals), ood_skipped=bool(evals.ood_not_evaluated),
                     shift_skipped=bool(evals.shift_not_evaluated))


def all_claims(data: ClaimData, config: dict) -> list[dict]:
    """The paper's claims, the benchmark's questions and the config's declared questions, in that order."""
    return evaluate_claims(data, config, ORDER + QUESTIONS) + declared_questions(data, config.get("claims") or {})


def build_tables(runs: pd.DataFrame, config: dict, expected_path=DEFAULT_EXPECTED,
                 evals: Evaluations | None = None, curves: dict | None = None) -> tuple[list[Table], list[dict]]:
    """Every table and the claims; ``evals`` = the runs' ood_shift.json (read here when None); ``curves`` =
    run dir -> its curves (ssvi.report.runs.RunSet.curves)."""
    evals = load_evaluations(runs) if evals is None else evals
    runs = flag_runs(runs, config)
    curves = curves or {}
    stats = main_stats(runs, config)
    expected, tolerances = load_expected(expected_path)
    comparison = paper_comparison(stats, expected, tolerances)
    criteria = criteria_table(runs, config)
    ood = ood_stats(runs, evals, config)
    claims = all_claims(claim_data(runs, evals, config), config)
    tables = [main_table(stats, comparison, config), calibrated_table(stats), comparison_table(comparison),
              density_sweep_table(stats), criteria, *overlap_tables(runs, config), *robustness_tables(runs, config),
              schedule_table(runs, config), ood_table(ood, evals, runs), *shift_tables(runs, evals, config),
              reliability_table(runs, curves, config), risk_coverage_table(runs, curves, config),
              claims_table(claims, len(runs), stats["n"], config), undecided_table(claims, stats["n"])]
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
        write_text(out / "runs.csv", finite_frame(runs).to_csv(index=False))
        for table in tables:
            write_table(table, out)
        write_json(out / "claims.json", strict_json({"n_runs": len(runs), "config": config.get("claims", {}),
                                                     "missing_runs": run_set.missing, "stale_runs": run_set.stale,
                                                     "ensembles_left_out": ensemble_notes, "claims": claims}))
    except DiskFullError as error:
        raise error.advise("the aggregation writes every table again") from None
    log.info("%d runs and ensembles -> %d tables in %s", len(runs), len(tables), out)
    return {t.name: t for t in tables}
