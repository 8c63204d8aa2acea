"""Overlap between removal criteria (the paper's Table 4): IoU / Spearman matrices of the criteria
ablation's subspace updates.

Takes the runs table and the workflow config (the ablation runs' ``subspace.json``); gives the tables
``iou_{start,middle,end}``, ``spearman_{start,middle,end}`` (6x6 criteria matrices averaged over runs at
the first / middle = index floor(U/2) / last of U updates) and ``criteria_vs_mean`` (per criterion, IoU
of its removed set with the |μ| criterion's, mean ± std over runs).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .columns import STAGES
from .render import Table, caption, pm
from .runs import read_subspace
from .select import ablation_runs


def stage_records(records: list[dict]) -> dict[str, dict] | None:
    """The first, middle (index floor(U / 2) of U updates) and last subspace update of a run."""
    updates = [r for r in records if "iou" in r]
    if not updates:
        return None
    return {"start": updates[0], "middle": updates[len(updates) // 2], "end": updates[-1]}


def overlap_tables(runs: pd.DataFrame, config: dict) -> list[Table]:
    """IoU / Spearman matrices between criteria at start/middle/end, averaged over the ablation runs."""
    mats: dict[tuple[str, str], list[pd.DataFrame]] = {(k, s): [] for k in ("iou", "spearman") for s in STAGES}
    names: list[str] = []
    for run_dir in ablation_runs(runs, config)["run_dir"]:
        stages = stage_records(read_subspace(run_dir))
        if stages is None:
            continue
        for stage, record in stages.items():
            names = names or list(record["criteria"])
            for kind in ("iou", "spearman"):
                values = np.array(record[kind], dtype=float)
                mats[kind, stage].append(pd.DataFrame(values, index=record["criteria"], columns=record["criteria"])
                                         .reindex(index=names, columns=names))
    n_runs = len(mats["iou", "start"])
    tables = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (no removals) stay NaN
        for (kind, stage), frames in mats.items():
            if frames:
                mean = pd.DataFrame(np.nanmean(np.stack([f.to_numpy() for f in frames]), axis=0),
                                    index=names, columns=names)
                data = mean.rename_axis("criterion").reset_index()
            else:
                data = pd.DataFrame(columns=["criterion"])
            display = data.copy()
            for c in display.columns[1:]:
                display[c] = display[c].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
            what = ("IoU of the weight sets removed" if kind == "iou" else "Spearman rank correlation of the scores")
            text = (f"{what} by each pair of removal criteria at the {stage} of the update phase (first / middle = "
                    f"index floor(U/2) / last of U updates), averaged over {n_runs} SSVI runs of the criteria "
                    f"ablation (all criteria and seeds)")
            tables.append(Table(f"{kind}_{stage}", data, display,
                                caption(text, [n_runs] if n_runs else [], "element-wise mean over runs", "run")))
        rows = []
        for c in names if "mean" in names else []:
            row = {"criterion": c}
            for stage in STAGES:
                vals = np.array([f.loc[c, "mean"] for f in mats["iou", stage]], dtype=float)
                vals = vals[~np.isnan(vals)]
                row[f"iou_{stage}_mean"] = vals.mean() if len(vals) else float("nan")
                row[f"iou_{stage}_std"] = vals.std(ddof=1) if len(vals) > 1 else float("nan")
            row["n"] = n_runs
            rows.append(row)
    cols = ["criterion", *[f"iou_{s}_{x}" for s in STAGES for x in ("mean", "std")], "n"]
    data = pd.DataFrame(rows, columns=cols)
    display = pd.DataFrame({"criterion": data["criterion"]})
    for stage in STAGES:
        display[f"IoU with |μ| ({stage})"] = [pm(a, b, ".3f")
                                              for a, b in zip(data[f"iou_{stage}_mean"], data[f"iou_{stage}_std"])]
    display["n (runs)"] = data["n"]
    text = ("Per criterion: IoU of its removed set with the set |μ| ('mean') removes, at the first, middle and last "
            "update (1 − IoU: how much its removals differ), mean ± std over the ablation runs")
    tables.append(Table("criteria_vs_mean", data, display,
                        caption(text, data["n"], "mean ± std over runs (std with ddof = 1)", "run")))
    return tables


