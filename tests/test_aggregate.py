"""Tests of workflow/scripts/aggregate.py on synthetic finished runs with known values
(tests/fixtures/synthetic_runs.py): table means/stds, claim verdicts, IoU stages, missing runs, the
comparison with the paper's values and the written files."""

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

import aggregate  # noqa: E402

SEED_STD = synth.ACC_OFFSET * math.sqrt(2)  # std (ddof = 1) of mean -/+ offset
TABLES = ["main", "paper_comparison", "density_sweep", "criteria", "criteria_vs_mean", "robustness",
          "robustness_spread", "claims", *[f"{k}_{s}" for k in ("iou", "spearman") for s in ("start", "middle", "end")]]


def run_aggregate(tmp_path, scenario=synth.GOOD, keep=lambda spec: True, expected=None, **kwargs):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, scenario, keep)
    tables = aggregate.aggregate(config, tmp_path / "tables", dirs, expected=expected, **kwargs)
    return config, tables


def verdicts(tables) -> dict[str, str]:
    return dict(zip(tables["claims"].data["claim"], tables["claims"].data["verdict"]))


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
    assert dense["nll_mean"] == pytest.approx(0.40) and dense["nll_std"] == pytest.approx(0.01 * math.sqrt(2))
    assert dense["train_flops_std"] == 0.0
    ssvi = row(main, method="ssvi", density=0.05)
    assert ssvi["acc_pct_mean"] == pytest.approx(88.0)
    assert ssvi["train_flops_reduction_vs_dense_vi"] == pytest.approx(19.0)
    # post-hoc rows are labelled with their fine-tune epochs; ablation/robustness variants are not in it
    assert {"posthoc (ft 0)", "posthoc (ft 2)"} <= set(main["method"])
    assert len(main) == 8
    display = tables["main"].display
    assert display.loc[display["method"] == "dense_vi", "acc (%)"].item() == f"90.00 ± {SEED_STD:.2f}"
    assert {"ECE (top-label L1, 15 bins)", "ECE (authors', uncertainty-calibration)"} <= set(display.columns)


def test_single_seed_std_is_dash(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: s.seed == 0)
    main = tables["main"]
    assert main.data["n"].eq(1).all() and main.data["acc_pct_std"].isna().all()
    assert main.display["acc (%)"].str.endswith("± —").all()
    assert "n = 1 seed per cell" in main.caption


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
    stages = aggregate.stage_records(records)
    assert [stages[k]["step"] for k in ("start", "middle", "end")] == [10, 30, 40]
    assert aggregate.stage_records([{"step": 10, "density": 0.5}]) is None


# ---- claims -----------------------------------------------------------------------------------------

def test_claims_hold(good):
    tmp, tables = good
    assert verdicts(tables) == {c: aggregate.HOLDS for c in ("C1", "C2", "C3", "C4", "C5", "C6")}
    claims = json.loads((tmp / "tables" / "claims.json").read_text())
    c1 = next(c for c in claims["claims"] if c["claim"] == "C1")
    assert {n["density"]: n["drop_points"] for n in c1["numbers"]} == pytest.approx({0.1: 1.0, 0.05: 2.0})
    c2 = next(c for c in claims["claims"] if c["claim"] == "C2")
    assert max(n["reduction"] for n in c2["numbers"]) == pytest.approx(19.0)
    assert all(tables["claims"].data["definition"].str.len() > 50)


def test_claims_fail(tmp_path):
    _, tables = run_aggregate(tmp_path, synth.BAD)
    assert verdicts(tables) == {c: aggregate.FAILS for c in ("C1", "C2", "C3", "C4", "C5", "C6")}


def test_claims_not_enough_runs(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: s.method == "ssvi" and s.variant == "default")
    assert verdicts(tables) == {c: aggregate.NOT_ENOUGH for c in ("C1", "C2", "C3", "C4", "C5", "C6")}


def test_missing_group_only_affects_its_claim(tmp_path):
    _, tables = run_aggregate(tmp_path, keep=lambda s: not s.variant.startswith(("sigma", "crit-")))
    v = verdicts(tables)
    assert v["C4"] == v["C6"] == aggregate.NOT_ENOUGH
    assert v["C1"] == v["C2"] == v["C3"] == v["C5"] == aggregate.HOLDS


def test_c2_rule_uses_one_over_d_when_below_target(tmp_path):
    stats = pd.DataFrame({"dataset": ["x", "x"], "arch": ["a", "a"], "method": ["dense_vi", "ssvi"],
                          "density": [1.0, 0.1], "train_flops_mean": [1e12, 1e12 / 9.2]})
    assert aggregate.claim_c2(stats, 20.0)["verdict"] == aggregate.HOLDS      # 9.2 >= 0.9 * min(20, 10)
    stats.loc[1, "train_flops_mean"] = 1e12 / 8.5
    assert aggregate.claim_c2(stats, 20.0)["verdict"] == aggregate.FAILS


# ---- missing runs, paper values, files, CLI --------------------------------------------------------------

def test_missing_run_is_an_error_naming_it(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config)
    missing = next(d for d in dirs if "/dense_vi/default/" in d.as_posix())
    (missing / "metrics.json").unlink()
    with pytest.raises(aggregate.MissingRunsError) as err:
        aggregate.aggregate(config, tmp_path / "tables", dirs)
    assert str(missing) in str(err.value) and "1 run(s)" in str(err.value)
    tables = aggregate.aggregate(config, tmp_path / "tables", dirs, allow_missing=True)
    assert len(pd.read_csv(tmp_path / "tables" / "runs.csv")) == len(dirs) - 1
    assert row(tables["main"].data, method="dense_vi", density=1.0)["n"] == 1


def test_paper_values_compared_where_filled(tmp_path):
    expected = tmp_path / "paper.yaml"
    expected.write_text(yaml.safe_dump({
        "tolerances": {"acc": 2.0, "nll": 0.05},
        "digits": {"resnet18": {"dense_vi": {"1": {"acc": 91.0, "nll": None}},
                                "ssvi": {"0.1": {"acc": 95.0}}, "gradual_pruning": {"0.2": {"acc": 50.0}}}}}))
    _, tables = run_aggregate(tmp_path, expected=expected)
    comp = tables["paper_comparison"].data
    dense_acc = row(comp, method="dense_vi", metric="acc_pct")
    assert dense_acc["ours_minus_paper"] == pytest.approx(-1.0) and dense_acc["verdict"] == aggregate.WITHIN
    ssvi_acc = row(comp, method="ssvi", metric="acc_pct")
    assert ssvi_acc["ours_minus_paper"] == pytest.approx(-6.0) and ssvi_acc["verdict"] == aggregate.OUTSIDE
    assert row(comp, method="dense_vi", metric="nll")["verdict"] == aggregate.NOT_FILLED
    assert row(comp, method="gradual_pruning", metric="acc_pct")["verdict"] == aggregate.NO_RUNS
    main, display = tables["main"].data, tables["main"].display
    assert row(main, method="dense_vi", density=1.0)["paper_acc_pct"] == pytest.approx(91.0)
    assert row(main, method="dense_vi", density=1.0)["paper_verdict_acc_pct"] == aggregate.WITHIN
    cells = dict(zip(display["method"] + "@" + display["density"], display["paper NLL"]))
    assert cells["dense_vi@1"] == aggregate.NOT_FILLED
    assert "within tolerance" in dict(zip(display["method"], display["paper acc (%)"]))["dense_vi"]


def test_shipped_expected_file_is_all_null():
    values, tolerances = aggregate.load_expected(aggregate.DEFAULT_EXPECTED)
    leaves = [v for archs in values.values() for methods in archs.values() for dens in methods.values()
              for metrics in dens.values() for v in metrics.values()]
    assert leaves and all(v is None for v in leaves)
    assert set(tolerances) >= {"acc", "nll", "ece"}


def test_files_written_with_captions(good):
    tmp, _ = good
    out = tmp / "tables"
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        first = (out / f"{name}.md").read_text().splitlines()[0]
        assert "ECE" in first and "FLOPs" in first and "2 per multiply-add" in first and "n = " in first
        tex = (out / f"{name}.tex").read_text()
        assert "\\begin{tabular}" in tex and "±" not in tex
    assert (out / "claims.json").is_file() and (out / "runs.csv").is_file()
    assert "### digits / resnet18" in (out / "main.md").read_text()


def test_empty_run_set_writes_empty_tables(tmp_path):
    tables = aggregate.aggregate(synth.make_config(tmp_path), tmp_path / "tables", [])
    assert all(t.data.empty for name, t in tables.items() if name not in ("claims", "paper_comparison"))
    assert set(verdicts(tables).values()) == {aggregate.NOT_ENOUGH}
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
