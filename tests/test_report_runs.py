"""Runs checked against the grid (ssvi.report.runs): stale and mixed runs refused or marked (contract
C-C), missing runs listed in the captions (--allow-missing), and evaluation sets that were not evaluated
(contract C-B) shown as "not evaluated", never a number.

    python -m pytest tests/test_report_runs.py -q
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

import aggregate  # noqa: E402  (the command line)

from ssvi.report import columns, runs  # noqa: E402
from ssvi.report.build import aggregate as build_aggregate  # noqa: E402

MAIN_PAIR = lambda s: s.variant == "default" and s.method in ("dense_vi", "ssvi")  # noqa: E731


def edit_metrics(run_dir: Path, **config_changes) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["config"].update(config_changes)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def mixed_runs(tmp_path):
    """Issue 12 item 1: dense VI at width 0.125 / 2 epochs (the config's recipe) and SSVI trained at
    width 0.25 / 8 epochs (another config) in one grid."""
    config = synth.make_config(tmp_path, run={"width": 0.125, "epochs": 2, "delta_t": 10})
    dirs = synth.write_runs(config, keep=MAIN_PAIR)
    stale = [d for d in dirs if "/ssvi/" in d.as_posix()]
    for d in stale:
        edit_metrics(d, width=0.25, epochs=8)
    return config, dirs, stale


def test_mixed_runs_are_refused_naming_run_and_keys(tmp_path):
    config, dirs, stale = mixed_runs(tmp_path)
    with pytest.raises(runs.StaleRunsError) as err:
        build_aggregate(config, tmp_path / "tables", dirs)
    message = str(err.value)
    assert f"{len(stale)} run(s)" in message and "--allow-stale" in message
    for d in stale:
        assert f"{d}: differs in epochs: 8 -> 2, width: 0.25 -> 0.125" in message
    assert not any(f"{d}:" in message for d in dirs if d not in stale)


def test_allow_stale_lists_and_marks_them(tmp_path):
    config, dirs, stale = mixed_runs(tmp_path)
    tables = build_aggregate(config, tmp_path / "tables", dirs, allow_stale=True)
    listed = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert set(listed.loc[listed["stale"], "run_dir"]) == set(map(str, stale))
    main = tables["main"]
    ssvi = main.data[main.data["method"] == "ssvi"]
    assert (ssvi["n_stale"] == ssvi["n"]).all()
    assert (main.data.loc[main.data["method"] == "dense_vi", "n_stale"] == 0).all()
    assert set(main.display.loc[main.display["method"] == "ssvi", "n (seeds)"]) == {"2 (2 stale)"}
    assert f"{len(stale)} stale run(s) included (--allow-stale" in main.caption
    assert "stale run(s) included" in (tmp_path / "tables" / "claims.md").read_text()


def test_cli_refuses_stale_runs_with_one_error(tmp_path, capsys):
    config, dirs, stale = mixed_runs(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["--config", str(path), "--out", str(tmp_path / "t"), "--allow-missing"]
    assert aggregate.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("aggregate: error: ") and str(stale[0]) in err and "width" in err
    assert aggregate.main([*args, "--allow-stale"]) == 0


def test_environment_keys_and_moved_results_dir_are_not_stale(tmp_path):
    config = synth.make_config(tmp_path, posthoc_finetune_epochs=[2])
    keep = lambda s: s.variant in ("default", "ft2") and s.method in ("dense_vi", "posthoc")  # noqa: E731
    dirs = synth.write_runs(config, keep=keep)
    for d in dirs:  # trained elsewhere: other data dir, device, threads
        edit_metrics(d, data_dir="/somewhere/else", device="cuda", threads=4)
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "results"), str(moved))   # init_from still names the old results_dir
    config["results_dir"] = str(moved)
    posthoc = next(p for p in (moved / "runs").rglob("metrics.json") if "/posthoc/" in p.as_posix())
    assert str(tmp_path / "results") in json.loads(posthoc.read_text())["config"]["init_from"]
    tables = build_aggregate(config, tmp_path / "tables", allow_missing=True)
    assert set(tables["main"].data["n_stale"]) == {0} and len(tables["main"].data) == 2
    edit_metrics(posthoc.parent, init_from=str(moved / "runs/digits/resnet18/dense_vi/default/d1/seed7"))
    with pytest.raises(runs.StaleRunsError, match="init_from"):
        build_aggregate(config, tmp_path / "tables", allow_missing=True)


def test_run_outside_the_grid_is_stale(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=MAIN_PAIR)
    outside = tmp_path / "elsewhere" / "my_run"
    shutil.copytree(dirs[0], outside)
    with pytest.raises(runs.StaleRunsError, match="not a run of this config's grid"):
        build_aggregate(config, tmp_path / "tables", [*dirs, outside])


def test_allow_missing_lists_the_missing_runs_in_the_captions(tmp_path):
    config = synth.make_config(tmp_path)
    synth.write_runs(config, keep=MAIN_PAIR)   # the grid's other runs never ran
    tables = build_aggregate(config, tmp_path / "tables", allow_missing=True)
    n_missing = len(synth.grid.run_grid(config)) - len(pd.read_csv(tmp_path / "tables" / "runs.csv"))
    assert n_missing > 0
    for table in tables.values():
        assert f"{n_missing} run(s) of the grid missing (no metrics.json; aggregated with --allow-missing)" \
            in table.caption
    assert "digits/resnet18/gradual_pruning/default/d0.1/seed0" in tables["main"].caption
    assert len(json.loads((tmp_path / "tables" / "claims.json").read_text())["missing_runs"]) == n_missing


def skip_sets(run_dirs, names: list[str]) -> None:
    """What ``ssvi evaluate --skip NAME`` writes: the set absent from the results, listed in not_evaluated."""
    for d in run_dirs:
        data = json.loads((d / "ood_shift.json").read_text())
        for name in names:
            data["ood"].pop(name, None)
            if name == "digits_corrupted":
                data["shift"], data["shift_by_severity"] = [], []
        data["not_evaluated"] = names
        (d / "ood_shift.json").write_text(json.dumps(data))


def test_not_evaluated_sets_say_so_and_their_claims_are_not_evaluated(tmp_path):
    config = synth.make_config(tmp_path)
    dirs = synth.write_runs(config, keep=MAIN_PAIR)
    skip_sets(dirs, ["uniform_noise", "digits_corrupted"])
    tables = build_aggregate(config, tmp_path / "tables", dirs)
    ood = tables["ood"]
    skipped = ood.data[ood.data["ood_set"] == "uniform_noise"]
    assert len(skipped) == 3 * 3 and (skipped["n"] == 0).all() and skipped["auroc_mean"].isna().all()
    assert set(skipped["status"]) == {columns.NOT_EVALUATED} and (skipped["n_not_evaluated"] == 2).all()
    assert set(ood.display["uniform_noise / max_prob AUROC"]) == {columns.NOT_EVALUATED}
    assert ood.display["natural_patches / max_prob AUROC"].str.contains("±").all()
    assert "| not evaluated " in (tmp_path / "tables" / "ood.md").read_text()
    shift = tables["shift"]
    assert set(shift.data["status"]) == {columns.NOT_EVALUATED} and shift.data["acc_pct_mean"].isna().all()
    assert set(shift.display["acc (%)"]) == {columns.NOT_EVALUATED}
    assert set(tables["shift_corruptions"].display["NLL"]) == {columns.NOT_EVALUATED}
    verdicts = dict(zip(tables["claims"].data["claim"], tables["claims"].data["verdict"]))
    assert verdicts["C5-shift"] == columns.NOT_EVALUATED
    assert verdicts["C5-ood"] == columns.HOLDS  # decided on natural_patches alone
    skip_sets(dirs, ["natural_patches", "uniform_noise", "digits_corrupted"])
    tables = build_aggregate(config, tmp_path / "tables", dirs)
    assert dict(zip(tables["claims"].data["claim"], tables["claims"].data["verdict"]))["C5-ood"] == \
        columns.NOT_EVALUATED
