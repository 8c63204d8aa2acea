"""The field's Bayesian alternatives (IVON, last-layer Laplace, MC dropout, sparse variational dropout): each
trains, resumes bit-identically, re-evaluates from its stored state without retraining and counts FLOPs as
declared; Laplace's fit and predictive are laplace-torch's; sparse VD's KL and threshold are the paper's.

    python -m pytest tests/test_alternatives.py -x -q
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from baselines.sparse_vd import THRESHOLD, log_alpha, neg_kl
from ssvi import trainer
from ssvi.cli import main
from ssvi.config import ConfigError, RunConfig
from ssvi.errors import Interrupted
from ssvi.export import load_compact, tensors_identical
from ssvi.flops import BACKWARD_FACTOR
from ssvi.methods import get_method
from ssvi.posterior import POSTERIORS
from ssvi.rundir import FINAL_MODEL, METRICS, PREDICTIONS, load_final
from ssvi.shift import evaluate_run
from ssvi.trainer import build_run, run

TINY = {"width": 0.125, "image_size": 8, "epochs": 2, "delta_t": 4, "threads": 1, "num_samples": 2,
        "density": 0.1, "eval_batch_size": 2000}
ALTERNATIVES = {"ivon": {"density": 0.1, "extra": {"hess_init": 1.0}}, "mc_dropout": {"density": 1.0},
                "sparse_vd": {"density": 1.0}, "laplace": {"epochs": 0}}


def _train(out: Path, **values) -> dict:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **values}.items()]
    assert main(["train", "--out", str(out), "--quiet", *sets]) == 0
    return json.loads((out / METRICS).read_text())


def _values(root: Path, method: str) -> dict:
    values = {"method": method, **ALTERNATIVES[method]}
    if method == "laplace":
        values["init_from"] = str(root / "deterministic_sparse")
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("alternatives")
    results = {"deterministic_sparse": _train(root / "deterministic_sparse", method="deterministic_sparse")}
    for method in ALTERNATIVES:
        results[method] = _train(root / method, **_values(root, method))
    return root, results


def test_each_declares_its_posterior_and_records_it(runs):
    _, results = runs
    kinds = {"ivon": "optimizer", "laplace": "fitted", "mc_dropout": "dropout", "sparse_vd": "gaussian"}
    for method, kind in kinds.items():
        metrics = results[method]
        assert get_method(method).posterior == kind == metrics["posterior"]
        assert metrics["posterior_description"] == POSTERIORS[kind].description
        assert metrics["eval"]["num_samples"] == TINY["num_samples"], method
        assert 0 <= metrics["acc"] <= 1 and math.isfinite(metrics["nll"]), method
        predictions = torch.load(Path(runs[0]) / method / PREDICTIONS)
        assert predictions["sample_probs"].shape[0] == TINY["num_samples"], method
    assert get_method("ivon").required_packages == ("ivon",)
    assert get_method("laplace").required_packages == ("laplace",)


def test_training_flops_follow_the_declaration(runs):
    root, r = runs
    steps = r["mc_dropout"]["steps"]
    dense_forward = r["mc_dropout"]["dense_test_flops"]
    # dropout: a point network's step, one product per layer: 3 f_D per example
    assert r["mc_dropout"]["training_products_per_layer"] == 1
    assert r["mc_dropout"]["train_flops"] == pytest.approx(BACKWARD_FACTOR * dense_forward * 1437 * TINY["epochs"])
    # sparse VD trains dense under the LRT: two products per Bayesian layer, like dense VI
    assert r["sparse_vd"]["training_products_per_layer"] == 2
    assert r["sparse_vd"]["train_flops"] > 1.9 * r["mc_dropout"]["train_flops"]
    # IVON at d = 0.1: 3 f_S per example plus its elementwise work per parameter and step
    ivon = r["ivon"]
    from baselines.ivon import ELEMENTWISE_FLOPS
    run_ = build_run(RunConfig.from_dict({**TINY, **_values(root, "ivon")}))
    per_step = ELEMENTWISE_FLOPS * sum(p.numel() for p in run_.optimizer.param_groups[0]["params"])
    assert ivon["train_flops"] == pytest.approx(BACKWARD_FACTOR * ivon["test_flops"] * 1437 * TINY["epochs"]
                                                + per_step * steps)
    # every sampled posterior's prediction costs K forward passes; Laplace's one forward plus its GLM variance
    for method in ("ivon", "mc_dropout", "sparse_vd"):
        assert r[method]["prediction_flops"] == pytest.approx(TINY["num_samples"] * r[method]["test_flops"]), method
    assert r["laplace"]["prediction_flops"] > r["laplace"]["test_flops"]
    # Laplace: its source's training, plus the fit (at least one sparse forward per training example)
    fit = r["laplace"]["laplace"]["train_flops"]
    assert r["laplace"]["train_flops"] == pytest.approx(r["deterministic_sparse"]["train_flops"] + fit)
    assert fit >= 1437 * r["laplace"]["test_flops"]
    assert r["laplace"]["train_time_s"] > r["deterministic_sparse"]["train_time_s"]


@pytest.mark.parametrize("method", list(ALTERNATIVES))
def test_re_evaluation_from_the_stored_state_reproduces_the_run(runs, method, tmp_path):
    root, results = runs
    copy = tmp_path / method
    shutil.copytree(root / method, copy)
    (copy / METRICS).unlink()
    (copy / PREDICTIONS).unlink()
    again = _train(copy, **_values(root, method))
    assert again["history"] == results[method]["history"] and again["train_flops"] == results[method]["train_flops"]
    for key in ("acc", "nll", "ece", "density", "prediction_flops"):
        assert again[key] == results[method][key], key
    stored = torch.load(root / method / PREDICTIONS)["predictive_probs"]
    assert torch.equal(torch.load(copy / PREDICTIONS)["predictive_probs"], stored)
    # the OOD / shift evaluation restores the posterior on its own (no training run built) to the same predictive
    evaluate_run(copy, keep_probs=True)
    assert torch.equal(torch.load(copy / "eval_probs.pt")["test"]["probs"], stored)


@pytest.mark.parametrize("method", ["ivon", "mc_dropout"])
def test_resumes_bit_identically_after_an_interruption(runs, method, tmp_path, monkeypatch):
    root, results = runs
    values = {**TINY, **_values(root, method), "epochs": 3}
    reference = run(RunConfig.from_dict(values), tmp_path / "reference")
    original = trainer.train_one_epoch

    def interrupted_in_epoch_3(run_):
        if run_.epoch == 2:
            raise KeyboardInterrupt
        return original(run_)

    monkeypatch.setattr(trainer, "train_one_epoch", interrupted_in_epoch_3)
    with pytest.raises(Interrupted):
        run(RunConfig.from_dict(values), tmp_path / "resumed")
    monkeypatch.setattr(trainer, "train_one_epoch", original)
    resumed = run(RunConfig.from_dict(values), tmp_path / "resumed")
    for key in ("acc", "nll", "ece", "train_flops", "history"):
        if key == "history":
            assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed[key]] == \
                   [{k: v for k, v in row.items() if k != "seconds"} for row in reference[key]]
        else:
            assert resumed[key] == reference[key], key
    first, first_state = load_compact(tmp_path / "reference" / FINAL_MODEL)
    second, second_state = load_compact(tmp_path / "resumed" / FINAL_MODEL)
    assert tensors_identical(first, second)
    if method == "ivon":  # IVON's Hessian and step counter came back from the checkpoint
        assert first_state["posterior"]["step"] == second_state["posterior"]["step"] == reference["steps"]
        assert all(torch.equal(a, b) for a, b in zip(first_state["posterior"]["hess"], second_state["posterior"]["hess"]))


def test_ivon_keeps_a_masks_inactive_weights_at_zero_and_stores_their_hessian_compactly(runs):
    root, _ = runs
    state, final = load_final(root / "ivon")
    masks = {k[:-len(".mask")]: v for k, v in state.items() if k.endswith(".mask")}
    sparse = [name for name, mask in masks.items() if not mask.all()]
    assert sparse
    for name in sparse:
        assert not state[f"{name}.weight_mu"][~masks[name]].any(), name
    stored = sum(h.numel() for h in final["posterior"]["hess"])
    total = sum(v.numel() for k, v in state.items() if k.endswith(".weight_mu") or ("bn" in k and "running" not in k
                                                                                    and "num_batches" not in k))
    assert stored < 0.5 * total  # the masked layers' Hessian is kept for active weights only


def test_laplace_fit_and_predictive_are_the_librarys(runs):
    """The run's stored predictive is reproduced by laplace-torch called directly on the same network."""
    from laplace import Laplace
    from torch.utils.data import DataLoader, TensorDataset

    from baselines.last_layer_laplace import evaluation_generator, map_network

    root, results = runs
    cfg = RunConfig.from_dict({**TINY, **_values(root, "laplace")})
    run_ = build_run(cfg)
    run_.model.load_state_dict(load_final(root / "deterministic_sparse")[0])  # the source's point estimate
    net, last = map_network(run_.model)
    data = run_.data
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    normalise = lambda x: (x.float() - mean) / std  # noqa: E731  (the inputs as training saw them, by hand)
    loader = DataLoader(TensorDataset(normalise(data.x_train), data.y_train), batch_size=cfg.batch_size)
    la = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron", last_layer_name=last)
    la.fit(loader)
    la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")
    stored = results["laplace"]["laplace"]
    assert float(la.prior_precision) == pytest.approx(stored["prior_precision"], rel=1e-5)
    samples = la.predictive_samples(normalise(data.x_test), pred_type="glm", n_samples=cfg.num_samples,
                                    generator=evaluation_generator(cfg.seed, "cpu"))
    predictive = torch.load(root / "laplace" / PREDICTIONS)["predictive_probs"]
    assert torch.allclose(samples.mean(0).float(), predictive, atol=1e-5)


def test_laplace_refuses_a_source_that_is_not_its_point_estimate(runs):
    root, _ = runs
    with pytest.raises(ConfigError, match="epochs: 0"):
        RunConfig.from_dict({**TINY, **_values(root, "laplace"), "epochs": 1})
    with pytest.raises(ConfigError) as info:
        build_run(RunConfig.from_dict({**TINY, **_values(root, "laplace"), "init_from": str(root / "mc_dropout")}))
    assert "'mc_dropout' there, 'deterministic_sparse' needed" in str(info.value)


def test_sparse_vd_kl_and_threshold_match_the_papers_formulas():
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    for la in (-8.0, -2.0, 0.0, 1.0, 3.0, 6.0):
        alpha = math.exp(la)
        paper = k1 / (1 + math.exp(-(k2 + k3 * la))) - 0.5 * math.log(1 + 1 / alpha) - k1  # eq. 14
        assert neg_kl(torch.tensor(la, dtype=torch.float64)).item() == pytest.approx(paper, rel=1e-12, abs=1e-12)
    # -KL -> 0 as alpha -> infinity (the prior's mass), and is largest in magnitude for small alpha
    assert abs(neg_kl(torch.tensor(10.0)).item()) < 1e-4 and neg_kl(torch.tensor(-5.0)).item() < -2.5
    # log alpha = log sigma^2 - log theta^2; a weight is removed exactly when log alpha > 3
    theta, sigma = torch.tensor([1.0, 1.0, 0.1]), torch.tensor([1.0, math.exp(1.5) * 0.999, math.exp(1.5) * 0.1001])
    la = log_alpha(theta, sigma)
    assert la[0].item() == pytest.approx(0.0, abs=1e-6)
    assert (la > THRESHOLD).tolist() == [False, False, True]


def test_sparse_vd_records_density_and_accuracy_before_and_after_removal(runs):
    root, results = runs
    record = results["sparse_vd"]["sparse_vd"]
    assert record["density_before"] == 1.0 and record["density_after"] == results["sparse_vd"]["density"] <= 1.0
    for stage in ("before", "after"):
        for view in ("predictive", "mean_weight"):
            assert set(record[stage][view]) == {"acc", "nll", "ece"}
    assert record["after"]["predictive"]["acc"] == results["sparse_vd"]["acc"]
    assert record["after"]["mean_weight"]["acc"] == results["sparse_vd"]["mean_weight"]["acc"]
    state, _ = load_final(root / "sparse_vd")
    for key, mask in state.items():  # every removed weight had log alpha > 3; what remains is at most that
        if key.endswith(".mask"):
            prefix = key[: -len("mask")]
            assert not state[prefix + "weight_mu"][~mask].any()


def test_the_grid_gives_laplace_its_source_and_a_method_its_options_and_archs():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow" / "scripts"))
    import grid

    config = {"datasets": ["digits"], "archs": ["resnet18", "vgg16"], "seeds": [0],
              "methods": {"laplace": [1.0, 0.1], "ivon": [0.1], "mc_dropout": [0.1]},
              "method_archs": {"laplace": ["resnet18"], "mc_dropout": ["resnet18"]},
              "method_options": {"ivon": {"hess_init": 1.0}}, "run": {"epochs": 3}}
    runs = grid.run_grid(config)
    assert "digits/resnet18/deterministic/default/d1/seed0" in runs           # Laplace's dense source
    assert "digits/resnet18/deterministic_sparse/default/d0.1/seed0" in runs  # and its sparse one
    assert not any(path.startswith("digits/vgg16/laplace") or path.startswith("digits/vgg16/mc_dropout")
                   for path in runs)
    assert "digits/resnet18/mc_dropout/default/d1/seed0" in runs             # trains dense whatever the list says
    laplace = grid.run_overrides(config, runs["digits/resnet18/laplace/default/d0.1/seed0"])
    assert laplace["epochs"] == 0 and laplace["init_from"].endswith("deterministic_sparse/default/d0.1/seed0")
    assert grid.run_overrides(config, runs["digits/vgg16/ivon/default/d0.1/seed0"])["extra"] == {"hess_init": 1.0}
    for path, run_spec in runs.items():
        grid.expected_config(config, run_spec)  # every run's config validates


def test_train_evaluate_goes_on_from_the_live_run_with_the_numbers_a_reload_gives(runs, tmp_path):
    """``train --evaluate`` evaluates OOD and shift from the run it just trained (no reload); ``ssvi evaluate``
    on a copy, which restores everything from the result files, writes the same results."""
    root, _ = runs
    live = tmp_path / "live"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **_values(root, "ivon"), "epochs": 1}.items()]
    assert main(["train", "--out", str(live), "--quiet", "--evaluate", "--keep-probs", *sets]) == 0
    reloaded = tmp_path / "reloaded"
    shutil.copytree(live, reloaded)
    evaluate_run(reloaded, keep_probs=True)
    first, second = (json.loads((d / "ood_shift.json").read_text()) for d in (live, reloaded))
    for key in ("ood", "shift", "shift_by_severity", "num_samples", "not_evaluated"):
        assert first[key] == second[key], key
    a, b = (torch.load(d / "eval_probs.pt") for d in (live, reloaded))
    assert torch.equal(a["test"]["probs"], b["test"]["probs"])
    assert all(torch.equal(a["shift"][c]["probs"], b["shift"][c]["probs"]) for c in a["shift"])
