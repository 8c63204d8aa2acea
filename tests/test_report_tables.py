"""Training time beside training FLOPs (table columns and claim C2-time) from synthetic runs, and the
schedule-ablation table (contract C-D).

    python -m pytest tests/test_report_tables.py -q
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

from ssvi.report import columns, runs  # noqa: E402
from ssvi.report.build import aggregate  # noqa: E402

MAIN = lambda s: s.variant in ("default", "ft0", "ft2") and s.method != "static_sparse"  # noqa: E731


def row(frame: pd.DataFrame, method: str, density: float) -> pd.Series:
    return frame[(frame["method"] == method) & (frame["density"] == density)].iloc[0]


def test_train_time_columns_and_ratios(tmp_path):
    config = synth.make_config(tmp_path)
    out = aggregate(config, tmp_path / "tables", synth.write_runs(config, keep=MAIN))
    main = out["main"]
    times = synth.GOOD["train_time"]
    ssvi = row(main.data, "ssvi", 0.05)
    assert ssvi["train_time_s_mean"] == pytest.approx(times[("ssvi", 0.05)])
    assert ssvi["train_time_s_std"] == pytest.approx(synth.TIME_OFFSET * 2 ** 0.5)
    assert ssvi["train_time_ratio_vs_dense_vi"] == pytest.approx(times[("dense_vi", 1.0)] / times[("ssvi", 0.05)])
    assert ssvi["device"] == synth.DEVICE
    # post-hoc: its own time plus its dense VI source's, like its FLOPs
    posthoc = row(main.data, "posthoc (ft 2)", 0.1)
    assert posthoc["train_time_s_mean"] == pytest.approx(synth.DEFAULTS["train_time"] + times[("dense_vi", 1.0)])
    columns_in_order = list(main.display.columns)
    flops_at = columns_in_order.index("train FLOPs: dense VI ÷ this")
    assert columns_in_order[flops_at + 1: flops_at + 3] == ["train time (s)", "time: dense VI ÷ this"]
    cells = dict(zip(main.display["method"] + "@" + main.display["density"], main.display["time: dense VI ÷ this"]))
    assert cells["ssvi@0.05"] == "2.50×" and cells["dense_vi@1"] == "1.00×"
    assert f"training device: {synth.DEVICE}" in main.caption
    sweep = out["density_sweep"].data
    assert set(sweep.loc[sweep["metric"] == "train_time_s", "n"]) == {2}
    listed = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert {"train_time_s", "train_time_this_run_s", "device"} <= set(listed.columns)


def claim(out, name: str) -> dict:
    return next(c for c in out["claims"].data.to_dict("records") if c["claim"] == name)


def test_c2_time_holds_fails_and_needs_one_device(tmp_path):
    config = synth.make_config(tmp_path / "good")
    good = aggregate(config, tmp_path / "good" / "tables", synth.write_runs(config, keep=MAIN))
    c = claim(good, "C2-time")
    assert c["verdict"] == columns.HOLDS and c["n_a"] == c["n_b"] == 2
    # the worst density, d = 0.1: log of the time ratio (100 ∓ 1 s against 60 ∓ 1 s, paired on seeds)
    assert c["effect"] == pytest.approx(np.mean([math.log(99 / 59), math.log(101 / 61)])) and c["ci_low"] > 0
    config = synth.make_config(tmp_path / "bad")
    bad = aggregate(config, tmp_path / "bad" / "tables", synth.write_runs(config, synth.BAD, keep=MAIN))
    assert claim(bad, "C2-time")["verdict"] == columns.FAILS and claim(bad, "C2-time")["ci_high"] < 0
    for d in (tmp_path / "good" / "results" / "runs").rglob("ssvi/default/*/seed*"):
        metrics = json.loads((d / "metrics.json").read_text())
        metrics["provenance"]["device"] = "cuda: another GPU"
        (d / "metrics.json").write_text(json.dumps(metrics))
    config = synth.make_config(tmp_path / "good")
    mixed = aggregate(config, tmp_path / "good" / "tables", runs.default_run_dirs(config), allow_missing=True)
    assert claim(mixed, "C2-time")["verdict"] == columns.NOT_TESTED  # times of different devices do not compare
    assert "training devices:" in mixed["main"].caption and "device" in mixed["main"].display.columns


def test_schedule_ablation_table(tmp_path):
    config = synth.make_config(tmp_path)
    keep = lambda s: s.method == "ssvi"  # noqa: E731  (the study, plus SSVI runs of other studies it must leave out)
    table = aggregate(config, tmp_path / "tables", synth.write_runs(config, keep=keep))["schedule_ablation"]
    data = table.data
    assert list(zip(data["delta_t"], data["alpha"])) == [(5, 0.1), (5, 0.3), (10, 0.1), (10, 0.3)]
    assert (data["n"] == 2).all()
    assert list(data["default"]) == [False, False, False, True]   # the recipe's delta_t = 10, alpha = 0.3
    for _, r in data.iterrows():
        expected = (synth.GOOD["acc"][("ssvi", 0.1)] if r["default"]
                    else synth.schedule_accuracy(r["delta_t"], r["alpha"]))
        assert r["acc_pct_mean"] == pytest.approx(expected)
        assert r["acc_pct_ci_low"] < r["acc_pct_mean"] < r["acc_pct_ci_high"]
    assert list(table.display["ΔT (steps)"]) == ["5", "5", "10", "10 (default)"]
    assert "ΔT ∈ [5, 10]" in table.caption and "n = 2 seeds per cell" in table.caption


def test_schedule_ablation_is_written_empty_with_a_note(tmp_path):
    config = synth.make_config(tmp_path)
    del config["schedule_ablation"]
    out = aggregate(config, tmp_path / "tables", synth.write_runs(config, keep=MAIN))
    assert out["schedule_ablation"].data.empty
    text = (tmp_path / "tables" / "schedule_ablation.md").read_text()
    assert "no schedule_ablation in config: the study was not run" in text and "No runs for this table" in text
    assert (tmp_path / "tables" / "schedule_ablation.csv").is_file()
    assert (tmp_path / "tables" / "schedule_ablation.tex").is_file()
