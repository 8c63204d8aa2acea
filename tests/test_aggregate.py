"""Tests of the report layer (ssvi.report, command line workflow/scripts/aggregate.py) on synthetic
finished runs with known values (tests/fixtures/synthetic_runs.py): table means/stds, OOD / shift tables,
claim verdicts, IoU stages, missing runs and evaluations, the comparison with the paper's values and the
written files.

    python -m pytest tests/test_aggregate.py -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

import aggregate  # noqa: E402  (the command line, workflow/scripts/aggregate.py)

from ssvi.report import claims as report_claims  # noqa: E402
from ssvi.report import columns, overlap, paper, runs  # noqa: E402
from ssvi.report.build import aggregate as build_aggregate  # noqa: E402
from ssvi.report.render import TABLE_FILES  # noqa: E402

SEED_STD = synth.ACC_OFFSET * math.sqrt(2)  # std (ddof = 1) of mean -/+ offset
TABLES = ["main", "calibrated", "paper_comparison", "density_sweep", "criteria", "criteria_vs_mean", "robustness",
          "robustness_spread", "schedule_ablation", "ood", "shift", "shift_corruptions", "reliability",
          "risk_coverage", "claims", "undecided", *[f"{k}_{s}" for k in ("iou", "spearman") for s in ("start", "middle", "end")]]
CLAIMS = ("C1", "C2", "C2-time", "C3", "C4", "C5", "C5-ood", "C5-shift", "C6")
# no predictions.pt (so no temperature-scaled view), no deterministic_sparse runs and no ensembles in the synthetic
# grid: these claims have no comparison there (tests/test_benchmark.py decides them on constructed values)
WITHOUT_DATA = ("C5-calibrated", "B1-acc", "B1-NLL", "B1-NLL-T", "B1-ECE", "B1-ECE-T", "B2-acc", "B2-NLL", "B2-ECE",
                "B3-acc", "B3-NLL", "B3-ECE", "B3-AUROC")
AUROC_STD = synth.AUROC_OFFSET * math.sqrt(2)


def run_aggregate(tmp_path, scenario=synth.GOOD, keep=lambda spec: True, expected=None,
                  evaluate=lambda spec: True, **kwargs):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, scenario, keep, evaluate)
    tables = build_aggregate(config, tmp_path / "tables", dirs, expected=expected, **kwargs)
    return config, tables


def verdicts(tables, names=CLAIMS) -> dict[str, str]:
    """The verdicts of the claims ``names`` (default: the paper's claims that the synthetic grid can decide)."""
    every = dict(zip(tables["claims"].data["claim"], tables["claims"].data["verdict"]))
    return {name: every[name] for name in names}


def row(frame: pd.DataFrame, **where) -> pd.Series:
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key].map(lambda v: math.isclose(v, value)) if isinstance(value, float) else sel[key] == value]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


# ---- tables ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good")
    return tmp, run_aggregate(tmp)[1]


def test_main_table_means_and_stds(good):
    _, tables = good
    main = tables["main"].data
    dense = row(main, method="dense_vi", density=1.0)
    assert dense["n"] == 2
    assert dense["acc_pct_mean"] == pytest.approx(90.0)
    assert dense["acc_pct_std"] == pytest.approx(SEED_STD)
    assert dense["nll_mean"] == pytest.approx(0.40) and dense["nll_std"] == pytest.approx(synth.NLL_OFFSET * math.sqrt(2))
    assert dense["train_flops_std"] == 0.0
    ssvi = row(main, method="ssvi", density=0.05)
    assert ssvi["acc_pct_mean"] == pytest.approx(88.0)
    assert ssvi["train_flops_reduction_vs_dense_vi"] == pytest.approx(19.0)
    # post-hoc rows are labelled with their fine-tune epochs; ablation/robustness variants are not in it
    assert {"posthoc (ft 0)", "posthoc (ft 2)"} <= set(main["method"])
    assert len(main) == 8
    display = tables["main"].display
    assert display.loc[display["method"] == "dense_vi", "acc (%)"].item().startswith(f"90.00 ± {SEED_STD:.2f} [")
    assert {"ECE (top-label L1, 15 bins)", "ECE (authors', uncertainty-calibration)"} <= set(display.columns)


def test_single_seed_std_is_dash(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: s.seed == 0)
    main = tables["main"]
    assert main.data["n"].eq(1).all() and main.data["acc_pct_std"].isna().all()
    assert main.display["acc (%)"].str.endswith("± —").all()
    assert "n = 1 seed per cell" in main.caption
    # n = 1 has no spread: every comparison is "not tested", except FLOPs, which are counts and compared exactly
    assert {c: v for c, v in verdicts(tables).items() if c != "C2"} == {c: columns.NOT_TESTED for c in CLAIMS
                                                                         if c != "C2"}
    assert verdicts(tables)["C2"] == columns.HOLDS
    c1 = next(c for c in tables["claims"].data.to_dict("records") if c["claim"] == "C1")
    assert "nothing tested: n = 1/1: a side has fewer than 2 run(s)" in c1["summary"] and c1["k"] == 0


def test_density_sweep_criteria_robustness(good):
    _, tables = good
    sweep = tables["density_sweep"].data
    assert row(sweep, method="gradual_pruning", density=0.05, metric="acc_pct")["mean"] == pytest.approx(84.0)
    crit = tables["criteria"].data
    assert list(crit["criterion"]) == ["mean", "snr", "SNR_mean_abs"]  # config order; default run included
    assert row(crit, criterion="SNR_mean_abs")["acc_pct_mean"] == pytest.approx(89.0)
    assert row(crit, criterion="mean")["acc_pct_std"] == pytest.approx(SEED_STD)
    rob = tables["robustness"].data
    assert len(rob) == 8  # 2 methods x 2 sigma x 2 kl, default cell included
    assert row(rob, method="dense_vi", sigma_init=0.01, kl_scale=0.01)["acc_pct_mean"] == pytest.approx(10.0)
    assert row(rob, method="dense_vi", sigma_init=6e-4, kl_scale=0.01)["acc_pct_mean"] == pytest.approx(90.0)
    spread = tables["robustness_spread"].data.set_index("method")
    assert spread.loc["dense_vi", "acc_min"] == pytest.approx(10.0)
    assert spread.loc["ssvi", "acc_range"] == pytest.approx(3.0)
    assert spread.loc["ssvi", "acc_std"] == pytest.approx(pd.Series([89.0, 88.0, 87.0, 86.0]).std())


def test_iou_start_middle_end_averaged_over_runs(good):
    _, tables = good
    mean_offset = synth.IOU_OFFSET_PER_SEED * sum(synth.CONFIG["seeds"]) / len(synth.CONFIG["seeds"])
    for stage, update in (("start", 0), ("middle", synth.N_UPDATES // 2), ("end", synth.N_UPDATES - 1)):
        expected = 0.1 * (update + 1) + mean_offset
        iou = tables[f"iou_{stage}"].data.set_index("criterion")
        assert list(iou.index) == synth.CRITERIA and list(iou.columns) == synth.CRITERIA
        assert iou.loc["mean", "snr"] == pytest.approx(expected)
        assert iou.loc["snr", "snr"] == pytest.approx(1.0)
        spearman = tables[f"spearman_{stage}"].data.set_index("criterion")
        assert spearman.loc["SNR_mean_abs", "mean"] == pytest.approx(-expected)
        vs_mean = tables["criteria_vs_mean"].data.set_index("criterion")
        assert vs_mean.loc["E_mean_abs", f"iou_{stage}_mean"] == pytest.approx(expected)
        assert vs_mean.loc["E_mean_abs", f"iou_{stage}_std"] > 0
    assert "averaged over 6 SSVI runs" in tables["iou_start"].caption  # 3 criteria x 2 seeds


def test_stage_records_pick_first_middle_last():
    records = [{"step": s, "iou": [[1.0]]} for s in (10, 20, 30, 40)]
    stages = overlap.stage_records(records)
    assert [stages[k]["step"] for k in ("start", "middle", "end")] == [10, 30, 40]
    assert overlap.stage_records([{"step": 10, "density": 0.5}]) is None


# ---- OOD detection and distribution shift (ood_shift.json) ---------------------------------------------

def test_ood_table_means_and_stds(good):
    _, tables = good
    ood = tables["ood"].data
    assert len(ood) == 8 * 2 * 3  # main-table cells x OOD sets x scores; ablation/robustness variants excluded
    assert {"posthoc (ft 0)", "posthoc (ft 2)"} <= set(ood["method"])
    cell = row(ood, method="ssvi", density=0.1, ood_set="natural_patches", score="max_prob")
    assert cell["n"] == 2
    assert cell["auroc_mean"] == pytest.approx(0.82) and cell["auroc_std"] == pytest.approx(AUROC_STD)
    assert cell["aupr_in_mean"] == pytest.approx(0.82 + synth.AUPR_ABOVE_AUROC)
    assert cell["aupr_out_mean"] == pytest.approx(0.82 - synth.AUPR_ABOVE_AUROC)
    assert cell["fpr95_mean"] == pytest.approx(0.18) and cell["fpr95_std"] == pytest.approx(AUROC_STD)
    mi = row(ood, method="dense_vi", density=1.0, ood_set="uniform_noise", score="neg_mutual_info")
    assert mi["auroc_mean"] == pytest.approx(0.80 + 0.1 - 0.05)
    # cells in main-table order, OOD sets in file order, scores in ssvi/shift.py's order
    dense = ood[ood["method"] == "dense_vi"]
    assert list(zip(dense["ood_set"], dense["score"])) == [(s, sc) for s in synth.OOD_SETS for sc in synth.OOD_SCORES]
    assert list(dict.fromkeys(ood["method"]))[0] == "dense_vi"
    display = tables["ood"].display
    assert len(display) == 8
    cells = dict(zip(display["method"] + "@" + display["density"], display["natural_patches / max_prob AUROC"]))
    assert cells["ssvi@0.1"].startswith(f"0.8200 ± {AUROC_STD:.4f} [")
    assert {f"uniform_noise / neg_entropy {m}" for m in ("AUROC", "AUPR-In", "AUPR-Out", "FPR95")} <= set(display.columns)
    text = tables["ood"].caption
    assert "higher score = more in-distribution" in text and "in-distribution test set as the positive class" in text
    assert "FPR at 95% TPR" in text and "ECE" not in text and "FLOPs" not in text and "OOD set as the positive class" in text


def test_ood_files_made_before_aupr_out_say_not_available(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: s.variant == "default" and s.method in ("dense_vi", "ssvi"))
    for d in dirs[:2]:  # two runs evaluated by an older ssvi evaluate: "aupr" (in-distribution positive) only
        evaluation = json.loads((d / "ood_shift.json").read_text())
        for scores in evaluation["ood"].values():
            for values in scores.values():
                values["aupr"] = values.pop("aupr_in")
                del values["aupr_out"]
        (d / "ood_shift.json").write_text(json.dumps(evaluation))
    tables = build_aggregate(config, tmp_path / "tables", dirs)
    old = runs.grid.grid_path(dirs[0]).split("/")
    display = tables["ood"].display
    cell = display[(display["method"] == old[2]) & (display["density"] == old[4][1:])]
    both_old = len({tuple(runs.grid.grid_path(d).split("/")[2:5]) for d in dirs[:2]}) == 1
    if both_old:
        assert cell["natural_patches / max_prob AUPR-Out"].item() == "not available"
    assert cell["natural_patches / max_prob AUPR-In"].item() != "not available"  # read from the old key
    data = tables["ood"].data
    assert data["aupr_in_mean"].notna().all()
    assert "re-run ssvi evaluate" in tables["ood"].caption


def test_shift_tables_means_and_stds(good):
    _, tables = good
    shift = tables["shift"].data
    assert len(shift) == 8 * 6  # cells x (severity 1-5 + all)
    dense = shift[shift["method"] == "dense_vi"]
    assert list(dense["severity"]) == ["1", "2", "3", "4", "5", columns.SEVERITY_ALL]
    for severity, drop in synth.SEVERITY_DROP.items():
        cell = row(shift, method="dense_vi", severity=str(severity))
        assert cell["acc_pct_mean"] == pytest.approx(70.0 - drop)  # corruption offsets cancel
        assert cell["acc_pct_std"] == pytest.approx(SEED_STD) and cell["n"] == 2
        assert cell["nll_mean"] == pytest.approx(0.40 + synth.SHIFT_NLL_PER_SEVERITY * severity)
    overall = row(shift, method="ssvi", density=0.1, severity="all")
    assert overall["acc_pct_mean"] == pytest.approx(72.0 - synth.MEAN_SEVERITY_DROP)
    assert overall["acc_pct_std"] == pytest.approx(SEED_STD)
    assert overall["ece_ssvi_mean"] == pytest.approx((0.05 + 0.03) / 2)  # default ece + 0.01 * mean severity
    assert overall["brier_mean"] == pytest.approx((0.35 + 0.3) / 3)
    per = tables["shift_corruptions"].data
    assert len(per) == 8 * 2
    for corruption, offset in synth.CORRUPTION_OFFSET.items():
        cell = row(per, method="dense_vi", corruption=corruption)
        assert cell["acc_pct_mean"] == pytest.approx(70.0 - synth.MEAN_SEVERITY_DROP + offset)
        assert cell["acc_pct_std"] == pytest.approx(SEED_STD)
    display = tables["shift"].display
    assert display.loc[(display["method"] == "dense_vi") & (display["severity"] == "3"), "acc (%)"].item() \
        .startswith(f"65.00 ± {SEED_STD:.2f} [")
    assert synth.SHIFT_SOURCE in tables["shift"].caption and "gaussian_noise, contrast" in tables["shift"].caption
    assert "ECE = top-label L1 ECE" in tables["shift_corruptions"].caption


def test_new_claim_numbers(good):
    tmp, tables = good
    claims = {c["claim"]: c for c in tables["claims"].data.to_dict("records")}
    numbers = {c["claim"]: c["numbers"] for c in json.loads((tmp / "tables" / "claims.json").read_text())["claims"]}
    ood = numbers["C5-ood"]
    assert len(ood) == 2 * 2 * 3  # SSVI densities x OOD sets x scores
    win = next(n for n in ood if n["density"] == 0.1 and n["ood_set"] == "natural_patches" and n["score"] == "max_prob")
    assert win["ssvi"] == pytest.approx(0.82) and win["dense_vi"] == pytest.approx(0.80)
    assert win["verdict"] == columns.HOLDS and win["ci_low"] > 0  # 0.02 ± ~6 x 0.002
    lose = next(n for n in ood if n["density"] == 0.05 and n["score"] == "max_prob")
    assert lose["verdict"] == columns.FAILS and lose["ci_high"] < 0  # 0.78 vs 0.80
    shift = {n["density"]: n for n in numbers["C5-shift"]}
    assert shift[0.1]["ssvi"] == pytest.approx(65.0) and shift[0.1]["dense_vi"] == pytest.approx(63.0)
    assert shift[0.1]["verdict"] == columns.HOLDS and shift[0.05]["verdict"] == columns.FAILS  # 65, 61 vs 63
    assert "AUROC" in claims["C5-ood"]["definition"] and "severity" in claims["C5-shift"]["definition"]


def per_run(rows: list[tuple], metric: str, extra: dict | None = None) -> pd.DataFrame:
    """A per-run frame: rows of (method, density, [seed values])."""
    records = [{"dataset": "x", "arch": "a", "method": m, "density": d, "seed": i, metric: v, **(extra or {})}
               for m, d, seeds in rows for i, v in enumerate(seeds)]
    return pd.DataFrame(records)


def decide_claim(name: str, **frames) -> dict:
    empty = pd.DataFrame(columns=["dataset", "arch", "method", "density"])
    data = report_claims.ClaimData(**{k: frames.get(k, empty) for k in
                                      ("main", "criteria", "robustness", "ood", "shift")})
    return report_claims.REGISTRY[name](data, {})


def test_new_claims_rules():
    dense, better, worse = [59.0, 60.0, 61.0], [64.0, 65.0, 66.0], [49.0, 50.0, 51.0]
    shift = per_run([("dense_vi", 1.0, dense), ("ssvi", 0.1, better), ("ssvi", 0.05, worse)], "acc_pct")
    assert decide_claim("C5-shift", shift=shift)["verdict"] == columns.HOLDS      # 5 ± 2.27 > 0 at d = 0.1
    shift = per_run([("dense_vi", 1.0, dense), ("ssvi", 0.1, [59.0, 60.5, 62.0]), ("ssvi", 0.05, worse)], "acc_pct")
    assert decide_claim("C5-shift", shift=shift)["verdict"] == columns.INCONCLUSIVE  # straddles 0; none holds
    shift = per_run([("dense_vi", 1.0, dense), ("ssvi", 0.1, worse)], "acc_pct")
    assert decide_claim("C5-shift", shift=shift)["verdict"] == columns.FAILS
    ood = pd.concat([per_run([("dense_vi", 1.0, [0.90, 0.91]), ("ssvi", 0.1, [0.80, 0.81])], "auroc",
                             {"ood_set": "o", "score": "max_prob"}),
                     per_run([("dense_vi", 1.0, [0.60, 0.61]), ("ssvi", 0.1, [0.70, 0.71])], "auroc",
                             {"ood_set": "o", "score": "neg_mutual_info"})], ignore_index=True)
    claim = decide_claim("C5-ood", ood=ood)
    assert claim["verdict"] == columns.HOLDS and len(claim["numbers"]) == 2   # only the MI score holds
    assert [n["verdict"] for n in claim["numbers"]] == [columns.FAILS, columns.HOLDS]
    assert claim["effect"] == pytest.approx(0.10) and claim["n_a"] == claim["n_b"] == 2  # the deciding comparison
    ood.loc[ood["score"] == "neg_mutual_info", "auroc"] = [0.60, 0.61, 0.50, 0.51]
    assert decide_claim("C5-ood", ood=ood)["verdict"] == columns.FAILS
    assert decide_claim("C5-ood", ood=ood[ood["method"] == "ssvi"])["verdict"] == columns.NOT_ENOUGH


def test_runs_without_evaluation_have_no_ood_or_shift_values(tmp_path):
    keep = lambda s: s.variant == "default" and s.method in ("dense_vi", "ssvi")  # noqa: E731
    _, tables = run_aggregate(tmp_path, keep=keep, evaluate=lambda s: False)
    assert tables["ood"].data.empty and tables["shift"].data.empty and tables["shift_corruptions"].data.empty
    v = verdicts(tables)
    assert v["C5-ood"] == v["C5-shift"] == columns.NOT_ENOUGH and v["C1"] == v["C5"] == columns.HOLDS
    assert "No runs for this table" in (tmp_path / "tables" / "ood.md").read_text()
    assert not pd.read_csv(tmp_path / "tables" / "runs.csv")["evaluated"].any()


def test_skipped_ood_set_counts_only_runs_that_have_it(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: s.method == "dense_vi" and s.variant == "default")
    skipped = next(d for d in dirs if "/dense_vi/default/" in d.as_posix() and d.name == "seed1")
    data = json.loads((skipped / "ood_shift.json").read_text())
    data["ood"]["uniform_noise"] = {"missing": "uniform_noise not found under data/"}
    (skipped / "ood_shift.json").write_text(json.dumps(data))
    ood = build_aggregate(config, tmp_path / "tables", dirs)["ood"]
    cell = row(ood.data, method="dense_vi", ood_set="uniform_noise", score="max_prob")
    assert cell["n"] == 1 and pd.isna(cell["auroc_std"])
    assert cell["auroc_mean"] == pytest.approx(0.80 + synth.OOD_SET_OFFSET["uniform_noise"] - synth.AUROC_OFFSET)
    assert row(ood.data, method="dense_vi", ood_set="natural_patches", score="max_prob")["n"] == 2
    assert "uniform_noise skipped in 1 run(s)" in ood.caption
    assert ood.display.loc[ood.display["method"] == "dense_vi", "n (seeds)"].item() == "1–2"


def test_evaluation_of_another_run_is_an_error(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=lambda s: s.method == "dense_vi" and s.variant == "default")
    data = json.loads((dirs[0] / "ood_shift.json").read_text())
    (dirs[0] / "ood_shift.json").write_text(json.dumps({**data, "seed": 7}))
    with pytest.raises(runs.EvalFileError, match="seed: 7 there"):
        build_aggregate(config, tmp_path / "tables", dirs)


# ---- claims -----------------------------------------------------------------------------------------

def test_claims_hold(good):
    tmp, tables = good
    assert verdicts(tables) == {c: columns.HOLDS for c in CLAIMS}
    assert verdicts(tables, WITHOUT_DATA) == {c: columns.NOT_ENOUGH for c in WITHOUT_DATA}
    assert set(tables["claims"].data["claim"]) == {*CLAIMS, *WITHOUT_DATA}
    claims = json.loads((tmp / "tables" / "claims.json").read_text())
    c1 = next(c for c in claims["claims"] if c["claim"] == "C1")
    assert {n["density"]: n["effect"] for n in c1["numbers"]} == pytest.approx({0.1: 1.0, 0.05: 2.0})
    c2 = next(c for c in claims["claims"] if c["claim"] == "C2")
    assert max(n["reduction"] for n in c2["numbers"]) == pytest.approx(19.0)
    assert all(tables["claims"].data["definition"].str.len() > 50)


def test_claims_fail(tmp_path):
    _, tables = run_aggregate(tmp_path, synth.BAD)
    assert verdicts(tables) == {c: columns.FAILS for c in CLAIMS}


def test_claims_not_enough_runs(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: s.method == "ssvi" and s.variant == "default")
    assert verdicts(tables) == {c: columns.NOT_ENOUGH for c in CLAIMS}


def test_missing_group_only_affects_its_claim(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: not s.variant.startswith(("sigma", "crit-")))
    v = verdicts(tables)
    assert v["C4"] == v["C6"] == columns.NOT_ENOUGH
    assert v["C1"] == v["C2"] == v["C3"] == v["C5"] == v["C5-ood"] == v["C5-shift"] == columns.HOLDS


def test_c2_rule_uses_one_over_d_when_below_target():
    def c2(ssvi_flops: list[float]) -> str:
        main = per_run([("dense_vi", 1.0, [1e12] * len(ssvi_flops)), ("ssvi", 0.1, ssvi_flops)], "train_flops")
        return decide_claim("C2", main=main.assign(device="cpu"))["verdict"]

    assert c2([1e12 / 9.2] * 2) == columns.HOLDS           # 9.2 >= 0.9 * min(20, 10)
    assert c2([1e12 / 8.5] * 2) == columns.FAILS
    assert c2([1e12 / 9.2]) == columns.HOLDS               # FLOPs are counts: one run is enough, compared exactly


# ---- missing runs, paper values, files, CLI --------------------------------------------------------------

def test_missing_run_is_an_error_naming_it(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config)
    missing = next(d for d in dirs if "/dense_vi/default/" in d.as_posix())
    (missing / "metrics.json").unlink()
    with pytest.raises(runs.MissingRunsError) as err:
        build_aggregate(config, tmp_path / "tables", dirs)
    assert str(missing) in str(err.value) and "1 run(s)" in str(err.value)
    tables = build_aggregate(config, tmp_path / "tables", dirs, allow_missing=True)
    assert len(pd.read_csv(tmp_path / "tables" / "runs.csv")) == len(dirs) - 1
    assert row(tables["main"].data, method="dense_vi", density=1.0)["n"] == 1


def test_require_eval_names_runs_without_ood_shift(tmp_path, capsys):
    config = synth.make_config(tmp_path)
    unevaluated = lambda s: s.method == "dense_vi" and s.variant == "default" and s.seed == 1  # noqa: E731
    dirs = synth.write_runs(config, keep=lambda s: s.variant == "default" and s.method in ("dense_vi", "ssvi"),
                            evaluate=lambda s: not unevaluated(s))
    missing = next(d for d in dirs if "/dense_vi/default/" in d.as_posix() and d.name == "seed1")
    with pytest.raises(runs.MissingEvalError) as err:
        build_aggregate(config, tmp_path / "tables", dirs, require_eval=True)
    assert str(missing) in str(err.value) and "1 finished run(s)" in str(err.value)
    assert str(dirs[0]) not in str(err.value)
    tables = build_aggregate(config, tmp_path / "tables", dirs)  # default: that run just has no values
    assert row(tables["ood"].data, method="dense_vi", ood_set="natural_patches", score="max_prob")["n"] == 1
    assert row(tables["shift"].data, method="dense_vi", severity="all")["n"] == 1
    assert row(tables["main"].data, method="dense_vi", density=1.0)["n"] == 2
    assert (~pd.read_csv(tmp_path / "tables" / "runs.csv")["evaluated"]).sum() == 1
    # the command line: --require-eval exits 2 naming the run
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    args = ["--config", str(config_path), "--out", str(tmp_path / "cli"), "--require-eval", *map(str, dirs)]
    assert aggregate.main(args) == 2
    assert str(missing) in capsys.readouterr().err


def test_paper_values_compared_where_filled(tmp_path):
    expected = tmp_path / "paper.yaml"
    expected.write_text(yaml.safe_dump({
        "tolerances": {"acc": 2.0, "nll": 0.05},
        "digits": {"resnet18": {"dense_vi": {"1": {"acc": 91.0, "nll": None}},
                                "ssvi": {"0.1": {"acc": 95.0}}, "gradual_pruning": {"0.2": {"acc": 50.0}}}}}))
    _, tables = run_aggregate(tmp_path, expected=expected)
    comp = tables["paper_comparison"].data
    dense_acc = row(comp, method="dense_vi", metric="acc_pct")
    assert dense_acc["ours_minus_paper"] == pytest.approx(-1.0) and dense_acc["verdict"] == columns.WITHIN
    ssvi_acc = row(comp, method="ssvi", metric="acc_pct")
    assert ssvi_acc["ours_minus_paper"] == pytest.approx(-6.0) and ssvi_acc["verdict"] == columns.OUTSIDE
    assert row(comp, method="dense_vi", metric="nll")["verdict"] == columns.NOT_FILLED
    assert row(comp, method="gradual_pruning", metric="acc_pct")["verdict"] == columns.NO_RUNS
    main, display = tables["main"].data, tables["main"].display
    assert row(main, method="dense_vi", density=1.0)["paper_acc_pct"] == pytest.approx(91.0)
    assert row(main, method="dense_vi", density=1.0)["paper_verdict_acc_pct"] == columns.WITHIN
    cells = dict(zip(display["method"] + "@" + display["density"], display["paper NLL"]))
    assert cells["dense_vi@1"] == columns.NOT_FILLED
    assert "within tolerance" in dict(zip(display["method"], display["paper acc (%)"]))["dense_vi"]


def test_shipped_expected_file_is_all_null():
    values, tolerances = paper.load_expected(paper.DEFAULT_EXPECTED)
    leaves = [v for archs in values.values() for methods in archs.values() for dens in methods.values()
              for metrics in dens.values() for v in metrics.values()]
    assert leaves and all(v is None for v in leaves)
    assert set(tolerances) >= {"acc", "nll", "ece"}


def test_files_written_with_captions(good):
    tmp, _ = good
    out = tmp / "tables"
    for name in TABLES:
        for ext in TABLE_FILES:
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        first = (out / f"{name}.md").read_text().splitlines()[0]
        # the ECE and FLOPs definitions only where the table has such columns (or metric rows)
        csv = pd.read_csv(out / f"{name}.csv") if (out / f"{name}.csv").stat().st_size > 1 else pd.DataFrame()
        names = " ".join(map(str, csv.columns)) + " " + " ".join(map(str, csv.get("metric", [])))
        assert ("equal-width bins (Guo et al. 2017)" in first) == ("ece" in names), name
        assert ("2 per multiply-add" in first) == ("flops" in names), name
        if name in ("reliability", "risk_coverage"):  # the synthetic runs have no curves (no predictions.pt)
            assert "no runs" in first
        tex = (out / f"{name}.tex").read_text()
        assert "\\begin{tabular}" in tex and "±" not in tex
    assert (out / "claims.json").is_file() and (out / "runs.csv").is_file()
    assert "### digits / resnet18" in (out / "main.md").read_text()


def test_empty_run_set_writes_empty_tables(tmp_path):
    tables = build_aggregate(synth.make_config(tmp_path), tmp_path / "tables", [])
    assert all(t.data.empty for name, t in tables.items() if name not in ("claims", "paper_comparison"))
    assert set(verdicts(tables).values()) == {columns.NOT_ENOUGH}
    assert "No runs for this table" in (tmp_path / "tables" / "main.md").read_text()


def test_cli_reads_the_config_grid_and_reports_missing(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    script = aggregate.SCRIPTS / "aggregate.py"
    cmd = [sys.executable, str(script), "--config", str(config_path), "--out", str(tmp_path / "tables")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=aggregate.REPO)
    assert done.returncode == 0, done.stderr
    assert "C1: holds" in done.stdout and (tmp_path / "tables" / "main.md").is_file()
    (dirs[0] / "metrics.json").unlink()
    done = subprocess.run(cmd + [str(d) for d in dirs], capture_output=True, text=True, cwd=aggregate.REPO)
    assert done.returncode == 2 and str(dirs[0]) in done.stderr


def test_the_aggregation_writes_exactly_the_files_it_declares(tmp_path):
    from ssvi.report.build import EXTRA_FILES, TABLE_NAMES
    config, tables = run_aggregate(tmp_path)
    written = {p.name for p in (tmp_path / "tables").iterdir()}
    assert written == {f"{n}.{e}" for n in TABLE_NAMES for e in TABLE_FILES} | set(EXTRA_FILES)
    assert set(tables) == set(TABLE_NAMES)


def test_an_ensemble_left_out_says_not_finished_only_when_a_member_has_not_finished(tmp_path):
    from ssvi.report.ensembles import build_ensembles, ensemble_dir
    # the config names where the results directory was; its runs are now under another path (copied or moved)
    config = {"datasets": ["digits"], "archs": ["resnet18"], "seeds": [0], "methods": {"dense_vi": [1.0]},
              "ensembles": [{"method": "dense_vi", "groups": [[0, 1]]}], "results_dir": str(tmp_path / "old")}
    [spec] = synth.grid.ensemble_specs(config)
    seed0, seed1 = (str(tmp_path / "new" / "runs" / path) for path in spec["paths"][0])
    finished = pd.DataFrame([{**{c: None for c in runs.RUN_COLUMNS}, "run_dir": seed0}], columns=runs.RUN_COLUMNS)
    name = ensemble_dir(spec, [0, 1])
    _, _, notes = build_ensembles(config, runs.RunSet(finished, missing=[seed1]))
    assert notes == [f"{name} left out: member run(s) {spec['paths'][0][1]} have not finished"]
    _, _, notes = build_ensembles(config, runs.RunSet(finished))
    assert notes == [f"{name} left out: member run(s) {spec['paths'][0][1]} are not among the runs aggregated"]
