"""How verdict rows are decided (ssvi.report.verdicts and the claims built on it), one test per rule: comparisons
that cannot be tested, the test the design calls for, family-wise levels, planning numbers that decide the row,
clean cells, strict outputs, flagged runs, questions a config declares, and the calibration edge cases.

    python -m pytest tests/test_verdicts.py -q
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

import grid  # noqa: E402

from ssvi.metrics import adaptive_ece  # noqa: E402
from ssvi.report import claims as report_claims  # noqa: E402
from ssvi.report import columns, stats, verdicts  # noqa: E402
from ssvi.report.benchmark import declared_questions  # noqa: E402
from ssvi.report.build import aggregate  # noqa: E402
from ssvi.report.flags import flag_runs  # noqa: E402
from ssvi.report.runs import chance_p_value, last_epoch_gain  # noqa: E402
from ssvi.report.select import main_runs  # noqa: E402
from ssvi.temperature import T_MAX, cross_fitted  # noqa: E402


def per_run(rows: list[tuple], **extra) -> pd.DataFrame:
    """rows of (method, density, {metric: [values by seed]}) -> a per-run frame of one dataset x arch."""
    records = []
    for method, density, metrics in rows:
        n = len(next(iter(metrics.values())))
        records += [{"dataset": "x", "arch": "a", "method": method, "density": density, "seed": i,
                     "variant": "default", "run_name": f"{method}/d{density:g}/seed{i}", "device": "cpu",
                     **{m: v[i] for m, v in metrics.items()}, **extra} for i in range(n)]
    return pd.DataFrame(records)


EMPTY = pd.DataFrame(columns=["dataset", "arch", "method", "density", "seed"])


def decide(name: str, main=EMPTY, params=None, **frames) -> dict:
    data = report_claims.ClaimData(main=main, **{k: frames.get(k, EMPTY) for k in
                                                 ("criteria", "robustness", "ood", "shift")})
    return report_claims.REGISTRY[name](data, params or {})


# ---- item 2: not tested ----------------------------------------------------------------------------------

def test_a_side_with_one_run_is_not_tested_and_kept_out_of_the_row():
    main = per_run([("dense_vi", 1.0, {"acc_pct": [90.0, 90.5, 91.0]}), ("ssvi", 0.1, {"acc_pct": [89.0, 89.4, 90.1]}),
                    ("ssvi", 0.05, {"acc_pct": [50.0]})])
    c1 = decide("C1", main)
    tested = [c for c in c1["numbers"] if c["verdict"] != columns.NOT_TESTED]
    untested = [c for c in c1["numbers"] if c["verdict"] == columns.NOT_TESTED]
    assert len(tested) == 1 and len(untested) == 1 and c1["k"] == 1
    assert "n = 3/1" in untested[0]["not_tested_because"]
    assert c1["verdict"] == columns.HOLDS  # the tested comparison (drop 1 point) decides; the untested one is listed
    assert "1 not tested of 2" in c1["summary"]
    nothing = decide("C1", main[main["seed"] == 0])
    assert nothing["verdict"] == columns.NOT_TESTED and nothing["k"] == 0 and "nothing tested" in nothing["summary"]


# ---- item 3: the test the design calls for ----------------------------------------------------------------

def test_shared_seeds_are_paired_and_counts_compared_exactly():
    main = per_run([("dense_vi", 1.0, {"acc_pct": [98.0, 97.0, 99.0], "train_flops": [1e12] * 3}),
                    ("ssvi", 0.1, {"acc_pct": [96.611, 95.611, 97.611], "train_flops": [1e11] * 3})])
    c1 = decide("C1", main, {"acc_drop_points": 1.5})
    comparison = c1["numbers"][0]
    assert comparison["test"] == stats.PAIRED and comparison["ci_high"] == pytest.approx(1.389)
    assert c1["verdict"] == columns.HOLDS  # Welch would give [0.28, 2.59] at 95%: inconclusive
    c2 = decide("C2", main[(main["method"] == "dense_vi") | (main["seed"] == 0)])  # one SSVI run is enough
    assert c2["numbers"][0]["test"] == stats.EXACT and c2["k"] == 0 and c2["verdict"] == columns.HOLDS
    assert c2["numbers"][0]["ci_low"] == c2["numbers"][0]["ci_high"]  # no interval: an exact difference


# ---- item 1: family-wise level per row ---------------------------------------------------------------------

def test_every_comparison_of_a_row_shares_its_five_percent():
    values = {"acc_pct": [90.0, 91.0, 92.0], "nll": [0.3, 0.31, 0.33], "ece": [0.02, 0.021, 0.025],
              "ece_ssvi": [0.01, 0.012, 0.011]}
    main = per_run([("dense_vi", 1.0, values), ("ssvi", 0.1, values), ("ssvi", 0.05, values)])
    c5 = decide("C5", main)
    assert c5["k"] == 8 and "Bonferroni over k = 8" in c5["family"]
    assert [c["level"] for c in c5["numbers"]] == pytest.approx([1 - 0.05 / 8] * 8)


# ---- item 5: a planning number from comparisons that decide the row -----------------------------------------

def test_the_row_plans_for_every_undecided_comparison():
    main = per_run([("dense_vi", 1.0, {"acc_pct": [90.0, 91.0, 92.0], "nll": [0.30, 0.35, 0.32],
                                       "ece": [0.02, 0.03, 0.025], "ece_ssvi": [0.01, 0.02, 0.015]}),
                    ("ssvi", 0.1, {"acc_pct": [90.5, 90.0, 93.0], "nll": [0.31, 0.33, 0.34],
                                   "ece": [0.025, 0.02, 0.03], "ece_ssvi": [0.012, 0.018, 0.02]})])
    c5 = decide("C5", main)
    assert c5["verdict"] == columns.INCONCLUSIVE
    assert "every one of the 4 undecided comparison(s) decided" in c5["planning"]
    items = [(stats.difference(report_claims.side(main, c["metric"], method="ssvi", density=0.1).sample,
                               report_claims.side(main, c["metric"], method="dense_vi", density=1.0).sample,
                               level=c["level"], sign=report_claims.oriented(c["metric"])),
              verdicts.smallest_effect(c["metric"], {})) for c in c5["numbers"]]
    assert c5["planning_seeds"] == stats.planning_seeds(items, c5["numbers"][0]["level"], every=True)
    assert all(c["planning_seeds"] for c in c5["numbers"])  # and each comparison's own number (table undecided)


# ---- item 6: clean cells -------------------------------------------------------------------------------------

def test_main_cells_use_the_main_seeds_only():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    main = grid.main_paths(config)
    members = grid.ensemble_members(config)
    extra = sorted(members - main)
    assert "digits/resnet18/ssvi/default/d0.05/seed3" in extra and "digits/resnet18/dense_vi/default/d1/seed3" in extra
    runs = pd.DataFrame({"method": ["ssvi", "ssvi", "ssvi"], "variant": ["default", "default", "ensemble"],
                         "main_grid": [True, False, True]})
    assert list(main_runs(runs).index) == [0, 2]


def test_the_aggregation_keeps_ensemble_members_extra_seeds_out_of_main_cells(tmp_path):
    config = synth.make_config(tmp_path, ensembles=[{"method": "ssvi", "density": 0.05, "groups": [[0, 1], [2, 3]]}])
    dirs = synth.write_runs(config, keep=lambda s: s.method in ("dense_vi", "ssvi") and s.variant == "default")
    assert any(d.name == "seed3" for d in dirs)
    for run_dir in dirs:  # one test set for every member
        synth.write_predictions([run_dir])
    tables = aggregate(config, tmp_path / "tables", dirs)
    main = tables["main"].data
    ssvi = main[(main["method"] == "ssvi") & np.isclose(main["density"], 0.05)]
    assert ssvi["n"].tolist() == [2]  # seeds 0 and 1; seeds 2 and 3 serve the ensemble only
    assert (main["method"] == "ssvi ×2 (d 0.05 each)").any()


# ---- item 7: readable, valid outputs ---------------------------------------------------------------------

def strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_outputs_are_strict_json_and_finite_csv(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: s.seed == 0)  # n = 1 everywhere: no interval anywhere
    aggregate(config, tmp_path / "tables", dirs)
    claims = strict((tmp_path / "tables" / "claims.json").read_text())
    c1 = next(c for c in claims["claims"] if c["claim"] == "C1")
    assert c1["numbers"][0]["ci_low"] is None and c1["numbers"][0]["not_tested_because"]
    for name in ("claims.csv", "undecided.csv", "runs.csv", "main.csv"):
        numbers = pd.read_csv(tmp_path / "tables" / name).select_dtypes("number")  # pandas reads 'inf' as inf
        assert not np.isinf(numbers.to_numpy(dtype=float)).any(), name


def test_n_follows_the_phrase_whichever_way_the_metric_points():
    main = per_run([("dense_vi", 1.0, {"nll": [0.3, 0.31], "acc_pct": [90.0, 91.0]}),
                    ("ssvi", 0.1, {"nll": [0.3, 0.32, 0.31], "acc_pct": [90.0, 91.0, 89.0]})])
    for metric in ("acc_pct", "nll"):
        comparison = report_claims.versus_dense(main, metric, [], metric)[0]
        assert comparison.what.endswith("SSVI vs dense VI (> 0: SSVI better)")
        assert (len(comparison.a), len(comparison.b)) == (3, 2)


def test_captions_name_only_columns_their_table_has(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: not (s.variant.startswith("sigma") and s.seed == 1
                                                        and s.method == "ssvi"))  # cells of 1 and 2 seeds
    tables = aggregate(config, tmp_path / "tables", dirs, allow_missing=True)
    assert "column n" in tables["robustness"].caption and "n (seeds)" in tables["robustness"].display.columns
    spread = tables["robustness_spread"]
    assert "n (seeds)" not in spread.display.columns and "column n" not in spread.caption


# ---- item 8: degenerate runs flagged ---------------------------------------------------------------------------

def test_runs_at_chance_level_decide_nothing_and_their_ood_numbers_are_marked():
    assert chance_p_value(0.10, 360, 10) > 0.5 and chance_p_value(0.15, 360, 10) < 0.05
    assert chance_p_value(0.011, 10000, 100) > 0.01 and chance_p_value(0.9, 360, 10) < 1e-100
    runs = pd.DataFrame({"chance_p": [0.6, 1e-9, math.nan], "last_epoch_gain": [0.0, 9.4, math.nan]})
    flagged = flag_runs(runs, {})
    assert flagged["chance_level"].tolist() == [True, False, False]
    assert flagged["not_converged"].tolist() == [False, True, False]
    # two 2-epoch workflows at chance: C5 used to hold; now nothing is tested
    chance = per_run([("dense_vi", 1.0, {"acc_pct": [10.0, 9.7, 10.3], "nll": [2.3] * 3, "ece": [0.01] * 3,
                                         "ece_ssvi": [0.0] * 3}),
                      ("ssvi", 0.1, {"acc_pct": [10.3, 10.6, 10.8], "nll": [2.3] * 3, "ece": [0.008] * 3,
                                     "ece_ssvi": [0.0] * 3})], chance_level=True, not_converged=False)
    c5 = decide("C5", chance)
    assert c5["verdict"] == columns.NOT_TESTED and "chance level" in c5["numbers"][0]["not_tested_because"]


def test_the_aggregation_flags_chance_level_and_unconverged_runs(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: s.variant == "default" and s.method in ("dense_vi", "ssvi"))
    for run_dir in dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        at_chance = "/ssvi/" in run_dir.as_posix() and "d0.05" in run_dir.as_posix()
        metrics.update(test_size=360, num_classes=10, acc=0.1 if at_chance else metrics["acc"],
                       history=[{"epoch": 1, "test_acc": 0.70}, {"epoch": 2, "test_acc": 0.85}]
                       if "/dense_vi/" in run_dir.as_posix() else [])
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    tables = aggregate(config, tmp_path / "tables", dirs)
    main = tables["main"].display.set_index(["method", "density"])
    assert main.loc[("ssvi", "0.05"), "flags"] == "2 at chance"
    assert main.loc[("dense_vi", "1"), "flags"] == "2 not converged"
    assert "(degenerate)" in tables["ood"].display.set_index("method").loc["ssvi"].to_string()
    claims = tables["claims"].data.set_index("claim")
    assert "not converged" in claims.loc["C1", "summary"]
    assert last_epoch_gain([{"test_acc": 0.653}, {"test_acc": 0.739}, {"test_acc": 0.833}]) == pytest.approx(9.4)


# ---- item 9: questions anyone can declare ------------------------------------------------------------------

def test_a_config_declares_its_own_question():
    main = per_run([("ssvi", 0.1, {"nll": [0.30, 0.31, 0.32]}), ("my_method", 0.1, {"nll": [0.40, 0.42, 0.41]}),
                    ("my_method", 0.05, {"nll": [0.20, 0.21, 0.22]})]).assign(acc_pct=90.0, ece=0.1, ece_ssvi=0.1)
    question = {"name": "mine-vs-ssvi", "a": {"method": "my_method", "density": 0.1},
                "b": {"method": "ssvi", "density": 0.1}, "metric": "nll", "at_most": 0.0}
    data = report_claims.ClaimData(main=main, criteria=EMPTY, robustness=EMPTY, ood=EMPTY, shift=EMPTY)
    row, = declared_questions(data, {"questions": [question]})
    assert row["source"] == report_claims.DECLARED and row["claim"] == "mine-vs-ssvi"
    assert row["verdict"] == columns.FAILS and row["numbers"][0]["effect"] == pytest.approx(0.10)
    assert row["numbers"][0]["test"] == stats.PAIRED



def test_declared_questions_reach_the_claims_table(tmp_path):
    question = {"name": "pruning-vs-ssvi", "a": {"method": "gradual_pruning", "density": 0.1},
                "b": {"method": "ssvi", "density": 0.1}, "metric": "acc_pct", "at_least": 0.0}
    config = synth.make_config(tmp_path, claims={**synth.CONFIG["claims"], "questions": [question]})
    tables = aggregate(config, tmp_path / "tables", synth.write_runs(config))
    claims = tables["claims"]
    assert claims.data["claim"].iloc[-1] == "pruning-vs-ssvi" and claims.data["source"].iloc[-1] == "declared"
    assert claims.display["claim"].iloc[-1] == "pruning-vs-ssvi (declared)"
    assert claims.data["verdict"].iloc[-1] == columns.FAILS  # 85% against 89% in the synthetic GOOD scenario


# ---- item 10: calibration edge cases --------------------------------------------------------------------------

def test_a_half_without_errors_fits_no_temperature():
    rng = np.random.default_rng(0)
    n = 400
    labels = torch.from_numpy(rng.integers(0, 10, n))
    probs = torch.full((n, 10), 0.02 / 9, dtype=torch.float64)
    probs[torch.arange(n), labels] = 0.98
    half_a = cross_fitted(probs, labels)
    wrong = torch.arange(n)[:4] * 2  # four errors, all in one half or the other: each half has fewer than five
    probs[wrong] = probs[wrong].roll(1, dims=1)
    fitted = cross_fitted(probs, labels)
    assert fitted["unfitted"] == 2 and fitted["temperatures"] == [1.0, 1.0]
    assert torch.allclose(fitted["probs"], probs)  # no sharpening of either half
    assert half_a["unfitted"] == 2
    # a temperature at the search limit is flagged
    soft = torch.softmax(torch.from_numpy(rng.normal(0, 0.01, (n, 10))), 1)
    limit = cross_fitted(soft, torch.from_numpy(rng.integers(0, 10, n)))
    assert limit["at_limit"] == any(math.isclose(t, T_MAX, rel_tol=1e-3) for t in limit["temperatures"])


def test_adaptive_ece_does_not_depend_on_the_order_of_tied_points():
    rng = np.random.default_rng(1)
    n = 300
    confidence = rng.choice([0.5, 0.7, 0.9], n)  # heavy ties across every bin boundary
    labels = torch.from_numpy(rng.integers(0, 3, n))
    probs = torch.empty(n, 3, dtype=torch.float64)
    hit = rng.random(n) < confidence
    for i in range(n):
        top = int(labels[i]) if hit[i] else (int(labels[i]) + 1) % 3
        probs[i] = (1 - confidence[i]) / 2
        probs[i, top] = confidence[i]
    values = {round(adaptive_ece(probs[p], labels[p]), 12) for p in (torch.randperm(n) for _ in range(30))}
    assert len(values) == 1


# ---- the row machinery on its own --------------------------------------------------------------------------------

def test_interval_text_names_the_test_and_level():
    side = verdicts.Side(stats.Sample.of([1.0, 2.0, 3.0]))
    row = verdicts.decide_row([verdicts.Spec("x", side, side, "acc_pct", at_least=0.0)], True, {})
    assert "(paired t, 95.00%)" in verdicts.interval_text(row.comparisons[0])
