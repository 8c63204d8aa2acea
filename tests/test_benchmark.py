"""The benchmark against the cheap alternatives: post-hoc's BatchNorm repair, the deterministic sparse network
(a point-estimate method), equal-budget ensembles from stored predictions, the benchmark's questions and
C5-calibrated decided on constructed seed values.

    python -m pytest tests/test_benchmark.py -q
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

from ssvi import flops
from ssvi.batchnorm import reestimate_batchnorm
from ssvi.config import ConfigError, RunConfig
from ssvi.layers import set_mode
from ssvi.metrics import classification_metrics
from ssvi.report import claims as report_claims
from ssvi.report import columns, stats
from ssvi.report.benchmark import QUESTIONS
from ssvi.rundir import load_final
from ssvi.trainer import build_run, run, train_step

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import synthetic_runs as synth  # noqa: E402  (puts workflow/scripts on sys.path)

import grid  # noqa: E402

TINY = {"width": 0.125, "image_size": 8, "threads": 1, "num_samples": 3, "eval_batch_size": 2000}


# --------------------------------------------------------------------------------------------
# post-hoc: BatchNorm repair
# --------------------------------------------------------------------------------------------

def test_batchnorm_reestimation_changes_the_running_statistics_and_only_them():
    built = build_run(RunConfig.from_dict({**TINY, "method": "dense_vi", "epochs": 1}))
    before = {k: v.clone() for k, v in built.model.state_dict().items()}
    info = reestimate_batchnorm(built.model, built.data, batch_size=128, generator=torch.Generator().manual_seed(0),
                                mode="lrt", device=built.device)
    after = built.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    statistics = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert changed and changed <= statistics and {k for k in statistics if "running_mean" in k} <= changed
    assert info["examples"] == len(built.data.y_train) and info["batches"] == math.ceil(info["examples"] / 128)
    assert all(m.momentum == 0.1 for m in built.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # a cumulative average: the statistics of one BatchNorm layer equal the mean over the batches' statistics
    assert int(after["bn1.num_batches_tracked"]) == info["batches"]


def test_posthoc_repairs_batchnorm_by_default_and_the_old_recipe_stays_a_variant(tmp_path):
    dense = tmp_path / "dense"
    run(RunConfig.from_dict({**TINY, "method": "dense_vi", "epochs": 3}), dense)
    posthoc = {**TINY, "method": "posthoc", "epochs": 0, "density": 0.2, "init_from": str(dense)}
    repaired = run(RunConfig.from_dict(posthoc), tmp_path / "repaired")
    old = run(RunConfig.from_dict({**posthoc, "extra": {"bn_reestimation": False}}), tmp_path / "old")
    source, _ = load_final(dense)
    repaired_state, old_state = load_final(tmp_path / "repaired")[0], load_final(tmp_path / "old")[0]
    assert torch.equal(old_state["bn1.running_mean"], source["bn1.running_mean"])  # the dense network's statistics
    assert not torch.equal(repaired_state["bn1.running_mean"], source["bn1.running_mean"])
    assert repaired["bn_reestimation"]["gradient_steps"] == 0 and old["bn_reestimation"].startswith("off")
    assert repaired["train_flops"] > old["train_flops"] == json.loads((dense / "metrics.json").read_text())["train_flops"]
    with pytest.raises(ConfigError, match="must be true or false"):
        RunConfig.from_dict({**posthoc, "extra": {"bn_reestimation": "yes"}})


# --------------------------------------------------------------------------------------------
# the deterministic sparse network: a point-estimate method
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deterministic(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    metrics = run(RunConfig.from_dict({**TINY, "method": "deterministic_sparse", "epochs": 2, "delta_t": 3,
                                       "density": 0.1}), out)
    return out, metrics


def test_the_deterministic_method_predicts_with_one_forward_pass(deterministic):
    out, metrics = deterministic
    predictions = torch.load(out / "predictions.pt")
    assert predictions["sample_probs"].shape[0] == 1  # one forward pass per prediction, not K samples
    assert torch.allclose(predictions["predictive_probs"], predictions["mean_weight_probs"])
    assert metrics["posterior"] == "point" and metrics["eval"]["num_samples"] == 1
    assert metrics["removal_criterion"] == "mean" and metrics["mask_updates"] > 0
    assert len(metrics["temperature_scaled"]["temperatures"]) == 2


def test_the_deterministic_loss_has_no_sigma_and_no_kl():
    cfg = RunConfig.from_dict({**TINY, "method": "deterministic_sparse", "epochs": 1, "delta_t": 3})
    built = build_run(cfg)
    built.method.initialize(built.model)
    rho = {n: layer.weight_rho.detach().clone() for n, layer in built.method.layers.items()}
    optimised = {id(p) for group in built.optimizer.param_groups for p in group["params"]}
    assert not any(id(layer.weight_rho) in optimised for layer in built.method.layers.values())
    x, y = built.data.x_train[:32], built.data.y_train[:32]
    inputs = (x - torch.tensor(built.data.mean).view(1, -1, 1, 1)) / torch.tensor(built.data.std).view(1, -1, 1, 1)
    assert built.method.forward_mode == "mean"  # train_one_epoch puts the layers in it
    set_mode(built.model, built.method.forward_mode)
    built.model.train()
    with torch.no_grad():
        expected_ce = torch.nn.functional.cross_entropy(built.model(inputs), y)  # mean weights, no noise
    loss, ce, kl = train_step(built, inputs, y, beta=123.0)
    assert float(kl) == 0.0 and float(loss) == float(ce) == pytest.approx(float(expected_ce), rel=1e-6)
    assert all(torch.equal(rho[n], layer.weight_rho) for n, layer in built.method.layers.items())


def test_the_deterministic_method_counts_one_product_per_layer():
    cfg = {**TINY, "epochs": 1, "delta_t": 3}
    det, ssvi = (build_run(RunConfig.from_dict({**cfg, "method": m})) for m in ("deterministic_sparse", "ssvi"))
    for method in (det.method, ssvi.method):
        method.initialize(method.model)
    other = flops.BACKWARD_FACTOR * det.method.ctx.profile.other_flops
    for step in (1, 3, 10_000):  # an ordinary and an update step of the update phase, and after it
        point, lrt = det.method.train_flops_per_example(step), ssvi.method.train_flops_per_example(step)
        assert lrt - other == pytest.approx(2 * (point - other))  # the Bayesian layers: half the LRT's


# --------------------------------------------------------------------------------------------
# ensembles from stored predictions
# --------------------------------------------------------------------------------------------

ENSEMBLE_CONFIG = {**synth.CONFIG, "methods": {"dense_vi": [1.0], "ssvi": [0.05, 0.1]},
                   "ensembles": [{"method": "ssvi", "density": 0.05, "groups": [[0, 1], [2, 3]]}]}


def constructed_predictions(seed: int, n: int = 60, classes: int = 4) -> dict:
    generator = torch.Generator().manual_seed(100 + seed)
    logits = torch.randn(n, classes, generator=generator) * 2
    labels = torch.arange(n) % classes
    probs = torch.softmax(logits, 1)
    return {"labels": labels, "predictive_probs": probs, "mean_weight_probs": probs, "sample_probs": probs[None].half()}


def test_an_ensemble_is_the_mean_of_its_members_and_costs_their_sum(tmp_path):
    from ssvi.files import save_torch
    from ssvi.report.build import aggregate
    config = synth.make_config(tmp_path, **{k: v for k, v in ENSEMBLE_CONFIG.items() if k != "results_dir"})
    dirs = synth.write_runs(config)
    members = {}
    for spec in grid.ensemble_specs(config):
        for group, paths in zip(spec["groups"], spec["paths"]):
            for seed, path in zip(group, paths):
                run_dir = grid.runs_root(config) / path
                predictions = constructed_predictions(seed)
                metrics = json.loads((run_dir / "metrics.json").read_text())
                metrics["files"]["predictions.pt"] = save_torch(run_dir / "predictions.pt", predictions)
                (run_dir / "metrics.json").write_text(json.dumps(metrics))
                members[seed] = (predictions, metrics)
    tables = aggregate(config, tmp_path / "tables", dirs)
    main = tables["main"].data
    row = main[main["method"] == "ssvi ×2 (d 0.05 each)"].iloc[0]
    assert row["density"] == pytest.approx(0.1) and row["n"] == 2  # budget = 2 x 0.05; two independent ensembles
    expected = [classification_metrics(torch.stack([members[s][0]["predictive_probs"].double() for s in group]).mean(0),
                                       members[group[0]][0]["labels"]) for group in ([0, 1], [2, 3])]
    assert row["acc_pct_mean"] == pytest.approx(100 * np.mean([m["acc"] for m in expected]))
    assert row["nll_mean"] == pytest.approx(np.mean([m["nll"] for m in expected]), rel=1e-9)
    flops_of = [sum(members[s][1]["train_flops"] for s in group) for group in ([0, 1], [2, 3])]
    assert row["train_flops_mean"] == pytest.approx(np.mean(flops_of))
    assert row["test_flops_mean"] == pytest.approx(2 * members[0][1]["test_flops"])
    # the members' metrics.json predate the views: they are recomputed from their stored predictions
    runs_table = pd.read_csv(tmp_path / "tables" / "runs.csv")
    member = runs_table[runs_table["run_dir"].str.endswith("ssvi/default/d0.05/seed0")].iloc[0]
    assert member["views_source"] == "recomputed from predictions.pt"
    assert member["ace"] == pytest.approx(classification_metrics(members[0][0]["predictive_probs"],
                                                                 members[0][0]["labels"])["ace"])
    assert (runs_table["views_source"] == "not available").any()  # runs without predictions.pt say so
    b2 = {c["claim"]: c for c in json.loads((tmp_path / "tables" / "claims.json").read_text())["claims"]}["B2-acc"]
    assert len(b2["numbers"]) == 1 and b2["numbers"][0]["baseline"] == "ssvi ×2 (d 0.05 each)"
    assert b2["numbers"][0]["n_b"] == 2 and b2["numbers"][0]["density"] == pytest.approx(0.1)


def test_members_reused_across_ensembles_are_refused():
    config = {**ENSEMBLE_CONFIG, "ensembles": [{"method": "ssvi", "density": 0.05, "groups": [[0, 1], [1, 2]]}]}
    with pytest.raises(ConfigError, match=r"seed\(s\) 1 appear in more than one group"):
        grid.run_grid(config)
    with pytest.raises(ConfigError, match="same number"):
        grid.run_grid({**ENSEMBLE_CONFIG, "ensembles": [{"method": "ssvi", "density": 0.05, "groups": [[0, 1], [2]]}]})


def test_ensemble_members_join_the_grid_and_keep_their_probabilities():
    paths = grid.run_grid(ENSEMBLE_CONFIG)
    members = grid.ensemble_members(ENSEMBLE_CONFIG)
    assert "digits/resnet18/ssvi/default/d0.05/seed3" in paths and "digits/resnet18/ssvi/default/d0.05/seed3" in members
    assert "digits/resnet18/ssvi/default/d0.1/seed0" not in members


# --------------------------------------------------------------------------------------------
# the new verdicts on constructed seed values
# --------------------------------------------------------------------------------------------

def per_run(rows: list[tuple]) -> pd.DataFrame:
    """rows of (method, density, {metric: [seed values]}) -> a per-run frame of one dataset x arch."""
    records = []
    for method, density, metrics in rows:
        n = len(next(iter(metrics.values())))
        records += [{"dataset": "x", "arch": "a", "method": method, "density": density, "seed": i, "variant":
                     "ensemble" if "×" in method else "default", "ensemble_method": method.split(" ")[0]
                     if "×" in method else "", "posterior": "point" if method == "deterministic_sparse" else "gaussian",
                     "train_flops": 2.0 if "×" in method else 1.0, "train_time_s": 3.0 if "×" in method else 1.0,
                     "num_samples": 8 if "×" in method else 4, **{m: v[i] for m, v in metrics.items()}}
                    for i in range(n)]
    return pd.DataFrame(records)


def decide(name: str, main: pd.DataFrame) -> dict:
    empty = pd.DataFrame(columns=["dataset", "arch", "method", "density"])
    data = report_claims.ClaimData(main=main, criteria=empty, robustness=empty, ood=empty, shift=empty)
    return report_claims.REGISTRY[name](data, {})


def test_b1_compares_like_with_like_against_every_point_estimate():
    good, bad = [90.0, 91.0, 92.0], [80.0, 81.0, 82.0]
    main = per_run([("ssvi", 0.1, {"acc_pct": good, "nll": [0.30, 0.31, 0.32], "t_nll": [0.40, 0.41, 0.42],
                                   "ece": [0.02, 0.021, 0.022], "t_ece": [0.02, 0.021, 0.022]}),
                    ("deterministic_sparse", 0.1, {"acc_pct": bad, "nll": [0.1, 0.1, 0.1], "t_nll": [0.50, 0.52, 0.51],
                                                   "ece": [0.0, 0.0, 0.0], "t_ece": [0.05, 0.06, 0.055]})])
    assert decide("B1-acc", main)["verdict"] == columns.HOLDS
    raw, scaled = decide("B1-NLL", main), decide("B1-NLL-T", main)
    assert raw["verdict"] == columns.FAILS and raw["numbers"][0]["effect"] == pytest.approx(0.1 - 0.31)  # raw vs raw
    assert scaled["verdict"] == columns.HOLDS and scaled["numbers"][0]["effect"] == pytest.approx(0.51 - 0.41)
    assert decide("B1-ECE-T", main)["verdict"] == columns.HOLDS
    worse = main.assign(acc_pct=[80.0, 81.0, 82.0, 90.0, 91.0, 92.0])
    assert decide("B1-acc", worse)["verdict"] == columns.FAILS
    assert decide("B1-acc", main.iloc[:3])["verdict"] == columns.NOT_ENOUGH
    # any point-estimate method (posterior "point") is compared, e.g. one a user adds in baselines/
    mine = main[main["method"] == "deterministic_sparse"].assign(method="my_point_net")
    both = decide("B1-acc", pd.concat([main, mine], ignore_index=True))
    assert [n["baseline"] for n in both["numbers"]] == ["deterministic_sparse", "my_point_net"] and both["k"] == 2
    assert report_claims.REGISTRY["B1-acc"](report_claims.ClaimData(main, *[main.iloc[0:0]] * 4), {})["source"] \
        == report_claims.BENCHMARK


def test_b2_compares_ssvi_with_an_ensemble_and_names_what_is_not_equal():
    main = per_run([("ssvi", 0.1, {"acc_pct": [90.0, 91.0, 92.0], "nll": [0.3, 0.31, 0.32]}),
                    ("ssvi ×2 (d 0.05 each)", 0.1, {"acc_pct": [88.0, 93.0], "nll": [0.2, 0.4]}),
                    ("dense_vi ×2 (d 1 each)", 2.0, {"acc_pct": [99.0, 99.5], "nll": [0.1, 0.1]})])
    acc, nll = decide("B2-acc", main), decide("B2-NLL", main)
    assert acc["verdict"] == columns.INCONCLUSIVE and len(acc["numbers"]) == 1  # dense ensembles: reference only
    comparison = acc["numbers"][0]
    assert comparison["test"] == stats.WELCH  # the ensembles' groups are not SSVI's seeds: never paired
    assert (comparison["n_a"], comparison["n_b"]) == (3, 2) == (nll["numbers"][0]["n_a"], nll["numbers"][0]["n_b"])
    assert "SSVI vs ssvi ×2" in comparison["what"]  # n in the phrase's order, whichever way the metric points
    assert "equal: active weights" in comparison["note"] and "training FLOPs ×2.00" in comparison["note"]
    assert "training time ×3.00" in comparison["note"] and "predictive samples 8 vs 4" in comparison["note"]
    assert acc["planning_seeds"] is not None and "per side" in acc["planning"]


def test_c5_calibrated_compares_the_temperature_scaled_metrics():
    main = per_run([("dense_vi", 1.0, {"nll": [0.30, 0.31], "t_nll": [0.20, 0.21], "ece": [0.05, 0.0505],
                                       "t_ece": [0.02, 0.021], "ace": [0.05, 0.06], "t_ace": [0.02, 0.021]}),
                    ("ssvi", 0.1, {"nll": [0.25, 0.26], "t_nll": [0.25, 0.26], "ece": [0.01, 0.0105],
                                   "t_ece": [0.03, 0.031], "ace": [0.01, 0.011], "t_ace": [0.03, 0.031]})])
    claim = decide("C5-calibrated", main)
    assert claim["verdict"] == columns.FAILS  # SSVI's raw advantage (NLL, ECE) is gone after scaling
    assert "raw advantages" in claim["numbers"][0]["note"] and "ECE" in claim["numbers"][0]["note"]
    assert "C5-calibrated" not in QUESTIONS and decide("C5-calibrated", main)["source"] == report_claims.PAPER


def test_b3_compares_ssvi_with_every_cheap_alternative_and_shows_their_costs():
    main = per_run([("ssvi", 0.1, {"acc_pct": [90.0, 91.0, 92.0]}), ("ivon", 1.0, {"acc_pct": [85.0, 86.0, 87.0]}),
                    ("ivon", 0.1, {"acc_pct": [80.0, 81.0, 83.0]}), ("mc_dropout", 1.0, {"acc_pct": [97.0, 97.5, 98.5]}),
                    ("deterministic_sparse", 0.1, {"acc_pct": [99.0, 99.0, 99.0]})])
    main.loc[main["method"] == "ivon", "train_flops"] = 0.5
    b3 = decide("B3-acc", main)
    pairs = [(n["baseline"], n["baseline_density"]) for n in b3["numbers"]]
    assert pairs == [("ivon", 1.0), ("ivon", 0.1), ("mc_dropout", 1.0)]  # not the deterministic network (B1's)
    assert b3["verdict"] == columns.FAILS  # at least as good as the best alternative: MC dropout is better
    assert b3["numbers"][0]["note"].startswith("training FLOPs of the alternative ÷ SSVI's: 0.50×")
    assert [n["test"] for n in b3["numbers"]] == [stats.PAIRED] * 3
    mine = decide_with("B3-acc", main.replace({"mc_dropout": "my_alternative"}), {"cheap_alternatives": ["my_alternative"]})
    assert [n["baseline"] for n in mine["numbers"]] == ["my_alternative"]


def decide_with(name: str, main: pd.DataFrame, params: dict) -> dict:
    empty = pd.DataFrame(columns=["dataset", "arch", "method", "density"])
    return report_claims.REGISTRY[name](report_claims.ClaimData(main, empty, empty, empty, empty), params)
