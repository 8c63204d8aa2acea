"""Ensembles at equal parameter budget, built from finished runs' stored predictions: no training, no new
forward pass.

An ensemble of M runs of one method (different seeds) at density d / M keeps as many active weights as one
run at d. Its predictive is the mean of its members' predictive probabilities (``predictions.pt``); its
training and test FLOPs and its training time are the members' sums. The workflow config's ``ensembles``
block says which to build from which seed groups (``grid.ensemble_specs``); groups are disjoint, so the
ensembles whose spread a table reports share no member, and a cell's n is its number of groups.

OOD detection and distribution shift of an ensemble come from its members' ``eval_probs.pt`` (kept by their
evaluation for that purpose, ``ssvi evaluate --keep-probs``): per set the mean of the members' predictive
probabilities, and for the scores the mixture over every member's samples (mutual information = entropy of
the mean − the mean of the members' mean sample entropies).

    rows, evals = build_ensembles(config, run_set)   # rows: runs-table rows; evals: Evaluations of them
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ..metrics import classification_metrics, ood_metrics, scores_from_mixture
from ..rundir import EVAL_PROBS, read_evaluation_file
from ..views import predictive_views
from .recorded import load_verified_torch, stored_predictive
from .runs import (EVAL_OOD_COLUMNS, EVAL_SHIFT_COLUMNS, RUN_COLUMNS, Evaluations, RunSet, chance_p_value, grid, number,
                   view_values)
from .select import ENSEMBLE

log = logging.getLogger("aggregate")


def ensemble_label(method: str, members: int, density: float) -> str:
    return f"{method} ×{members} (d {density:g} each)"


def ensemble_dir(spec: dict, group: list[int]) -> str:
    """The runs table's run_dir of one ensemble (a name, not a directory)."""
    return (f"{ENSEMBLE}:{spec['dataset']}/{spec['arch']}/{spec['method']}/d{spec['density']:g}/"
            f"seeds{'+'.join(map(str, group))}")


def build_ensembles(config: dict, run_set: RunSet) -> tuple[pd.DataFrame, Evaluations, list[str]]:
    """Runs-table rows of every ensemble whose members all finished, their OOD / shift evaluations, and notes
    (ensembles left out, evaluations not available)."""
    runs, rows, ood, shift, notes = run_set.runs, [], [], [], []
    # members by grid path among the runs aggregated: where results_dir was when the config was written
    # (a results directory copied or moved since) decides nothing
    finished = {grid.grid_path(d): d for d in runs["run_dir"]} if not runs.empty else {}
    unfinished = {grid.grid_path(d) for d in run_set.missing}
    for spec in grid.ensemble_specs(config):
        label = ensemble_label(spec["method"], spec["members"], spec["density"])
        for index, (group, paths) in enumerate(zip(spec["groups"], spec["paths"])):
            name = ensemble_dir(spec, group)
            absent = [path for path in paths if path not in finished]
            if absent:
                why = "have not finished" if set(absent) <= unfinished else "are not among the runs aggregated"
                notes.append(f"{name} left out: member run(s) {', '.join(absent)} {why}")
                continue
            dirs = [finished[path] for path in paths]
            members = runs.set_index("run_dir").loc[dirs]
            rows.append(_ensemble_row(spec, label, index, name, members, dirs, run_set))
            evaluation = _ensemble_evaluation(name, dirs, run_set)
            if evaluation is None:
                notes.append(f"{name}: no OOD / shift values (a member has no {EVAL_PROBS}: re-run its evaluation "
                             "with --keep-probs, as the workflow does for ensemble members)")
                continue
            ood += evaluation[0]
            shift += evaluation[1]
    evals = Evaluations(pd.DataFrame(ood, columns=EVAL_OOD_COLUMNS), pd.DataFrame(shift, columns=EVAL_SHIFT_COLUMNS))
    return pd.DataFrame(rows, columns=RUN_COLUMNS), evals, notes


def _ensemble_row(spec: dict, label: str, index: int, name: str, members: pd.DataFrame, dirs: list[str],
                  run_set: RunSet) -> dict:
    probs, labels = zip(*(stored_predictive(Path(d), run_set.metrics[d]) for d in dirs))
    if any(not torch.equal(labels[0], other) for other in labels[1:]):
        raise ValueError(f"{name}: its members were evaluated on different test sets")
    views = predictive_views(torch.stack([p.double() for p in probs]).mean(0), labels[0])
    metrics = views["metrics"]
    first = members.iloc[0]
    run_set.curves[name] = views["curves"]
    return {**{column: first.get(column) for column in RUN_COLUMNS if column in members.columns},
            "run_dir": name, "method": label, "label": label, "variant": ENSEMBLE,
            "density": spec["members"] * spec["density"], "seed": index,
            "ensemble_method": spec["method"], "ensemble_size": spec["members"],
            "acc_pct": 100 * metrics["acc"], **{k: metrics[k] for k in ("nll", "ece", "ece_ssvi", "brier")},
            **view_values(views), "views_source": f"mean of {len(dirs)} members' stored predictive probabilities",
            **{column: float(members[column].sum()) for column in
               ("train_flops", "train_flops_this_run", "test_flops", "train_time_s", "train_time_this_run_s")},
            "num_samples": number(members["num_samples"].sum()), "actual_density": float(members["actual_density"].sum()),
            "device": "; ".join(dict.fromkeys(members["device"])), "stale": bool(members["stale"].any()),
            "stale_reason": "; ".join(r for r in members["stale_reason"] if r),
            "run_name": name, "main_grid": True,
            "chance_p": chance_p_value(metrics["acc"], first.get("test_size"), first.get("num_classes")),
            "last_epoch_gain": float(members["last_epoch_gain"].max())}  # flagged when a member still improved


def _ensemble_evaluation(name: str, dirs: list[str], run_set: RunSet):
    """(OOD rows, shift rows) of one ensemble from its members' eval_probs.pt, or None when one lacks it."""
    kept = []
    for d in dirs:
        path = Path(d)
        if not (path / EVAL_PROBS).is_file():
            return None
        kept.append(load_verified_torch(path, EVAL_PROBS, read_evaluation_file(path)))
    mixture = lambda part: scores_from_mixture(  # noqa: E731
        torch.stack([p["probs"].double() for p in part]).mean(0),
        torch.stack([p["expected_entropy"].double() for p in part]).mean(0))
    inside = mixture([k["test"] for k in kept])
    ood = []
    for ood_set in kept[0]["ood"]:
        outside = mixture([k["ood"][ood_set] for k in kept])
        ood += [{"run_dir": name, "ood_set": ood_set, "score": score, **ood_metrics(inside[score], outside[score])}
                for score in inside]
    shift = []
    for corruption, first in kept[0]["shift"].items():
        probs = torch.stack([k["shift"][corruption]["probs"].double() for k in kept]).mean(0)
        for severity, (p, y) in enumerate(zip(probs.split(first["sizes"]), first["labels"].split(first["sizes"])), 1):
            m = classification_metrics(p, y)
            shift.append({"run_dir": name, "corruption": corruption, "severity": severity, "acc_pct": 100 * m["acc"],
                          **{k: m[k] for k in EVAL_SHIFT_COLUMNS[4:]}})
    return ood, shift
