"""Tables of the evaluation sets (``ood_shift.json`` of ``ssvi evaluate``): OOD detection and distribution
shift, default recipe.

Takes the runs table and ``ssvi.report.runs.Evaluations``; gives
- ``ood_per_run`` / ``shift_per_run``: per-run values joined with the main-table cells (the claims use them);
- ``ood_stats`` + ``ood_table``: CSV one row per dataset x arch x method x density x OOD set x score;
  MD/TEX one row per cell, a column per (OOD set, score, metric);
- ``shift_tables``: ``shift`` (per severity 1-5 and "all") and ``shift_corruptions`` (per corruption).
A set a cell's runs did not evaluate (``not_evaluated``, contract C-B) is a row with n = 0 and status
"not evaluated", shown as "not evaluated", never a number.
"""

from __future__ import annotations

import pandas as pd

from .flags import CHANCE, NOT_CONVERGED
from .columns import (CELL_KEYS, FORMATS, LABELS, METRICS, NOT_AVAILABLE, NOT_EVALUATED, OOD_METRICS, OOD_NOTE,
                      OOD_SCORES, SEVERITY_ALL)
from .render import Table, caption, density_cell, n_cell, pm, pm_columns
from .runs import Evaluations
from .select import main_cells, ranked, sort_cells
from .stats import seed_stats


RUN_IDENTITY = ["run_dir", "stale", "seed", "variant", "run_name", CHANCE, NOT_CONVERGED]  # carried per run


def _identity(frame: pd.DataFrame) -> list[str]:
    return [c for c in RUN_IDENTITY if c in frame]


def _eval_cells(runs: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """The main-table runs (method = label, with their identity and flags) joined with their per-run OOD or shift
    rows."""
    cells = main_cells(runs)
    if cells.empty or values.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, *_identity(cells), *values.columns[1:]])
    return cells[[*CELL_KEYS, *_identity(cells)]].merge(values, on="run_dir")


def _per_run_mean(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of METRICS per run and ``by`` (NaN if any averaged value is NaN, like ssvi/shift.py)."""
    return frame.groupby([*CELL_KEYS, *_identity(frame), *by], sort=False)[METRICS].mean(skipna=False).reset_index()


def _skipped_cells(runs: pd.DataFrame, skipped: dict[str, list[str]], column: str) -> pd.DataFrame:
    """CELL_KEYS + ``column`` (set name) + n_not_evaluated: main-table cells whose runs skipped that set."""
    pairs = pd.DataFrame([(d, name) for name, dirs in skipped.items() for d in dirs], columns=["run_dir", column])
    cells = main_cells(runs)
    if cells.empty or pairs.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, column, "n_not_evaluated"])
    joined = cells[[*CELL_KEYS, "run_dir"]].merge(pairs, on="run_dir")
    return joined.groupby([*CELL_KEYS, column], sort=False).size().rename("n_not_evaluated").reset_index()


def _with_skipped(stats: pd.DataFrame, skipped: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``stats`` plus a row (n = 0) for each skipped key no run evaluated; columns n_not_evaluated, status."""
    merged = stats.merge(skipped, on=[k for k in keys if k in skipped.columns], how="outer") if not skipped.empty \
        else stats.assign(n_not_evaluated=0)
    merged["n"] = merged["n"].fillna(0).astype(int)
    merged["n_stale"] = merged["n_stale"].fillna(0).astype(int)
    merged["n_not_evaluated"] = merged["n_not_evaluated"].fillna(0).astype(int)
    merged["status"] = ["" if n else NOT_EVALUATED for n in merged["n"]]
    return merged


def ood_per_run(runs: pd.DataFrame, evals: Evaluations) -> pd.DataFrame:
    return _eval_cells(runs, evals.ood)


def shift_per_run(runs: pd.DataFrame, evals: Evaluations) -> pd.DataFrame:
    """Per run: the metrics averaged over every corruption and severity (the shift table's 'all')."""
    cells = _eval_cells(runs, evals.shift)
    return _per_run_mean(cells, []) if not cells.empty else cells


def ood_stats(runs: pd.DataFrame, evals: Evaluations, config: dict) -> pd.DataFrame:
    """One row per dataset x arch x method label x density x OOD set x score: n, auroc/aupr/fpr95 mean,
    std, interval; n_not_evaluated, status ("not evaluated" where no run of the cell evaluated the set)."""
    cells = ood_per_run(runs, evals)
    if not cells.empty:
        cells = ranked(ranked(cells, "score", OOD_SCORES), "ood_set", [])
    keys = [*CELL_KEYS, "ood_set", "score"]
    stats = seed_stats(cells, keys, OOD_METRICS)
    if not cells.empty and CHANCE in cells:  # OOD scores of a run at chance level are degenerate
        chance = cells.groupby(keys, sort=False, dropna=False)[CHANCE].sum().astype(int).rename("n_chance")
        stats = stats.merge(chance.reset_index(), on=keys, how="left")
    skipped = _skipped_cells(runs, evals.ood_not_evaluated, "ood_set")
    scores = list(dict.fromkeys(evals.ood["score"])) or OOD_SCORES
    if not skipped.empty:
        skipped = skipped.merge(pd.DataFrame({"score": scores}), how="cross")
    return sort_cells(_with_skipped(stats, skipped, keys), config)


def ood_table(stats: pd.DataFrame, evals: Evaluations, runs: pd.DataFrame) -> Table:
    pairs = list(dict.fromkeys(zip(stats["ood_set"], stats["score"])))
    lookup = {tuple(r[[*CELL_KEYS, "ood_set", "score"]]): r for _, r in stats.iterrows()}
    columns = [*CELL_KEYS, *[f"{s} / {sc} {LABELS[m]}" for s, sc in pairs for m in OOD_METRICS], "n (seeds)"]
    rows = []
    for cell in dict.fromkeys(zip(*(stats[k] for k in CELL_KEYS))):
        row, ns = dict(zip(CELL_KEYS, cell)), []
        row["density"] = density_cell(row["density"])
        for ood_set, score in pairs:
            r = lookup.get((*cell, ood_set, score))
            ns += [] if r is None or not r["n"] else [(r["n"], r["n_stale"])]
            for m in OOD_METRICS:
                degenerate = r is not None and r.get("n_chance", 0) > 0
                row[f"{ood_set} / {score} {LABELS[m]}"] = (
                    "—" if r is None else NOT_EVALUATED if r["status"] == NOT_EVALUATED
                    else NOT_AVAILABLE if pd.isna(r[f"{m}_mean"]) else
                    pm(r[f"{m}_mean"], r[f"{m}_std"], FORMATS[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"])
                    + (" (degenerate)" if degenerate else ""))
        row["n (seeds)"] = _n_range(ns)
        rows.append(row)
    main_dirs = set(main_cells(runs)["run_dir"]) if not runs.empty else set()
    skipped = {s: sum(d in main_dirs for d in dirs) for s, dirs in evals.ood_not_evaluated.items()}
    skipped_note = "; ".join(f"{s} skipped in {n} run(s) (not evaluated: the workflow's evaluation: skip, or its "
                             f"data missing when an older ssvi evaluate ran)" for s, n in skipped.items() if n)
    unrecorded = int(stats["aupr_out_mean"].isna().sum() - (stats["n"] == 0).sum()) if not stats.empty else 0
    unrecorded_note = (f"{NOT_AVAILABLE}: AUPR-Out of runs evaluated before it was recorded (their ood_shift.json has "
                       "no aupr_out; re-run ssvi evaluate on them)" if unrecorded else "")
    text = ("OOD detection (ood_shift.json of ssvi evaluate), default recipe, final-epoch model, posterior "
            "predictive (ensembles: from their members' eval_probs.pt), in-distribution test set vs each OOD set; "
            f"post-hoc rows labelled with their fine-tune epochs; values per run, then over seeds; '(degenerate)': "
            f"the cell has runs at chance level, whose scores rank noise (CSV: n_chance). {OOD_NOTE}"
            + "".join(f". {note}" for note in (skipped_note, unrecorded_note) if note))
    evaluated = stats["n"][stats["n"] > 0]
    return Table("ood", stats, pd.DataFrame(rows, columns=columns), caption(text, evaluated),
                 blocks=["dataset", "arch"], prune_blocks=True)


def _n_range(ns: list[tuple]) -> str:
    if not ns:
        return "0"
    counts = [int(n) for n, _ in ns]
    stale = max(int(s) for _, s in ns)
    text = str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
    return text + (f" ({stale} stale)" if stale else "")


def _shift_text(evals: Evaluations) -> str:
    sources = ", ".join(evals.shift_sources) or "none recorded"
    corruptions = ", ".join(dict.fromkeys(evals.shift["corruption"])) or "none"
    skipped = (f"; shift set not evaluated in {len(evals.shift_not_evaluated)} run(s) (the workflow's evaluation: "
               f"skip)" if evals.shift_not_evaluated else "")
    return (f"Distribution shift (ood_shift.json of ssvi evaluate), default recipe, final-epoch model, posterior "
            f"predictive on corrupted test sets (source: {sources}; corruptions: {corruptions}); post-hoc rows "
            f"labelled with their fine-tune epochs{skipped}")


def shift_tables(runs: pd.DataFrame, evals: Evaluations, config: dict) -> list[Table]:
    """shift: per severity (mean over corruptions) + 'all'; shift_corruptions: per corruption (mean over severities)."""
    cells = _eval_cells(runs, evals.shift)
    keys = [*CELL_KEYS, "severity"]
    if cells.empty:
        stats = seed_stats(cells, keys, METRICS)
        per_corruption = seed_stats(cells, [*CELL_KEYS, "corruption"], METRICS)
    else:
        by_severity = seed_stats(_per_run_mean(cells, ["severity"]).sort_values("severity", kind="stable"),
                                 keys, METRICS)
        by_severity["severity"] = by_severity["severity"].map(lambda v: str(int(v)))
        overall = seed_stats(_per_run_mean(cells, []).assign(severity=SEVERITY_ALL), keys, METRICS)
        stats = pd.concat([by_severity, overall], ignore_index=True)
        per_corruption = seed_stats(ranked(_per_run_mean(cells, ["corruption"]), "corruption", []),
                                    [*CELL_KEYS, "corruption"], METRICS)
    skipped = _skipped_cells(runs, {SEVERITY_ALL: evals.shift_not_evaluated}, "severity")
    stats = sort_cells(_with_skipped(stats, skipped, keys), config)
    per_corruption = sort_cells(_with_skipped(per_corruption, skipped.rename(columns={"severity": "corruption"}),
                                              [*CELL_KEYS, "corruption"]), config)
    tables = []
    for name, frame, what in (
            ("shift", stats, f"per severity 1–5 the metrics averaged over corruptions per run; severity "
                             f"'{SEVERITY_ALL}' = mean over every corruption and severity"),
            ("shift_corruptions", per_corruption, "per corruption the metrics averaged over severities 1–5 per run")):
        display = frame[[c for c in frame.columns if c in [*CELL_KEYS, "severity", "corruption"]]].copy()
        display["density"] = display["density"].map(density_cell)
        not_evaluated = frame["status"] == NOT_EVALUATED
        for label, column in pm_columns(frame, METRICS).items():
            display[label] = [NOT_EVALUATED if skip else cell for skip, cell in zip(not_evaluated, column)]
        display["n (seeds)"] = [n_cell(n, s) for n, s in zip(frame["n"], frame["n_stale"])]
        tables.append(Table(name, frame, display, caption(f"{_shift_text(evals)}: {what}", frame["n"][frame["n"] > 0]),
                            blocks=["dataset", "arch"]))
    return tables
