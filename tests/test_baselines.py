"""Baselines: each method's defining behaviour, FLOPs ordering, and adding a method as one file."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baselines.gradual_pruning import scheduled_density
from ssvi import criteria
from ssvi.cli import main
from ssvi.config import ConfigError, RunConfig, parse_override
from ssvi.methods import list_methods
from ssvi.rundir import load_final
from ssvi.subspace import num_kept
from ssvi.trainer import build_run

REPO = Path(__file__).resolve().parent.parent
TINY = {"width": 0.125, "image_size": 8, "epochs": 3, "delta_t": 4, "threads": 1, "num_samples": 2, "density": 0.1}


def _train(out: Path, **values) -> dict:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **values}.items()]
    assert main(["train", "--out", str(out), "--quiet", *sets]) == 0
    return json.loads((out / "metrics.json").read_text())


def _masks(run_dir: Path) -> dict[str, torch.Tensor]:
    state, _ = load_final(run_dir)
    return {k[: -len(".mask")]: v for k, v in state.items() if k.endswith(".mask")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    results = {m: _train(root / m, method=m) for m in ("dense_vi", "ssvi", "static_sparse", "gradual_pruning")}
    results["posthoc"] = _train(root / "posthoc", method="posthoc", epochs=0, init_from=str(root / "dense_vi"))
    return root, results


def test_registry_has_every_method():
    assert {"ssvi", "dense_vi", "gradual_pruning", "posthoc", "static_sparse"} <= set(list_methods())


def test_every_method_writes_complete_metrics(runs):
    _, results = runs
    for method, metrics in results.items():
        for key in ("acc", "nll", "ece", "ece_ssvi", "brier", "density", "train_flops", "test_flops", "epochs",
                    "seed", "method", "dataset", "arch", "history", "config", "provenance"):
            assert key in metrics, f"{method} lacks {key}"
        assert metrics["method"] == method and 0 <= metrics["acc"] <= 1


def test_metrics_record_the_number_of_mask_updates(runs):
    root, results = runs
    t_end = int(0.75 * results["ssvi"]["steps"])
    assert results["ssvi"]["mask_updates"] == len([s for s in range(1, t_end) if s % TINY["delta_t"] == 0]) > 0
    for method in ("ssvi", "gradual_pruning"):
        records = json.loads((root / method / "subspace.json").read_text())
        assert results[method]["mask_updates"] == len(records) > 0, method
    for method in ("dense_vi", "static_sparse", "posthoc"):
        assert results[method]["mask_updates"] == 0, method


# digits at batch 128: 12 steps per epoch
@pytest.mark.parametrize(("method", "values", "expected"), [
    ("ssvi", {"epochs": 10, "delta_t": 100}, ["too few subspace updates (0 < min_subspace_updates=1)", "120 steps",
                                              "t_end=90", "delta_t=100", "delta_t <= 89"]),
    ("gradual_pruning", {"epochs": 1, "delta_t": 100, "min_subspace_updates": 2},
     ["too few pruning steps (1 < min_subspace_updates=2)", "12 steps", "t_end=9", "delta_t <= 8"]),
    ("ssvi", {"epochs": 1, "t_end_frac": 0.0}, ["(0 < min_subspace_updates=1)", "t_end=0", "epochs", "t_end_frac"]),
])
def test_a_schedule_with_too_few_mask_updates_is_refused(method, values, expected):
    cfg = RunConfig.from_dict({**TINY, "method": method, **values})
    with pytest.raises(ConfigError) as info:
        build_run(cfg)
    for text in expected:
        assert text in str(info.value)
    assert "min_subspace_updates=0" in str(info.value)


def test_static_sparse_and_an_explicit_minimum_of_zero_need_no_updates():
    no_updates = {"epochs": 10, "delta_t": 100}
    assert build_run(RunConfig.from_dict({**TINY, "method": "static_sparse", **no_updates})).method.layers
    assert build_run(RunConfig.from_dict({**TINY, "method": "ssvi", **no_updates, "min_subspace_updates": 0}))


def test_the_readme_hand_run_example_updates_its_subspace():
    readme = (REPO / "docs" / "running.md").read_text()
    command = re.search(r"python -m ssvi train --out runs/demo((?: --set \S+)+)", readme).group(1)
    cfg = RunConfig.from_dict({**dict(parse_override(s) for s in command.split(" --set ")[1:]), "threads": 1})
    assert cfg.method == "ssvi"
    build_run(cfg)  # validation passes
    steps = -(-1437 // cfg.batch_size) * cfg.epochs  # digits has 1,437 training images
    assert any(s % cfg.delta_t == 0 for s in range(1, int(cfg.t_end_frac * steps))), "no subspace update"


def test_dense_stays_dense(runs):
    root, results = runs
    assert results["dense_vi"]["density"] == 1.0
    assert all(m.all() for m in _masks(root / "dense_vi").values())


def test_static_sparse_never_changes_its_mask(runs):
    root, _ = runs
    initial = build_run(RunConfig.from_dict({**TINY, "method": "static_sparse"}))
    initial.method.initialize(initial.model)
    final = _masks(root / "static_sparse")
    for name, layer in initial.method.layers.items():
        assert torch.equal(layer.mask, final[name]), name


def test_ssvi_moves_its_mask_at_constant_density(runs):
    root, results = runs
    initial = build_run(RunConfig.from_dict({**TINY, "method": "ssvi"}))
    initial.method.initialize(initial.model)
    final = _masks(root / "ssvi")
    assert any(not torch.equal(l.mask, final[n]) for n, l in initial.method.layers.items())
    assert all(int(final[n].sum()) == l.num_active() for n, l in initial.method.layers.items())


def test_gradual_pruning_follows_cubic_schedule_and_ends_at_target(runs):
    root, results = runs
    metrics = results["gradual_pruning"]
    steps = metrics["steps"]
    t_end = int(0.75 * steps)
    records = json.loads((root / "gradual_pruning" / "subspace.json").read_text())
    assert [r["step"] for r in records] == sorted({s for s in range(4, t_end + 1, 4)} | {t_end})
    for record in records:  # overall density tracks the schedule (per-layer rounding aside)
        assert record["density"] == pytest.approx(scheduled_density(record["step"], t_end, 4, 0.1), abs=2e-3)
    for name, mask in _masks(root / "gradual_pruning").items():
        if name in metrics["layer_densities"]:
            assert int(mask.sum()) == num_kept(mask.numel(), 0.1), name
    assert scheduled_density(0, 100, 10, 0.1) == 1.0
    assert scheduled_density(50, 100, 10, 0.1) == pytest.approx(1 - 0.9 * (1 - 0.5**3))
    assert scheduled_density(100, 100, 10, 0.1) == 0.1  # exactly the target: the authors' final count


def test_posthoc_keeps_exactly_top_density_by_snr(runs):
    root, results = runs
    dense, _ = load_final(root / "dense_vi")
    masks = _masks(root / "posthoc")
    assert set(results["posthoc"]["layer_densities"]) < set(masks)
    for name in results["posthoc"]["layer_densities"]:
        mu, rho = dense[f"{name}.weight_mu"], dense[f"{name}.weight_rho"]
        snr = criteria.score("snr", mu, torch.nn.functional.softplus(rho)).flatten()
        expected = torch.zeros_like(snr, dtype=torch.bool)
        expected[torch.topk(snr, num_kept(snr.numel(), 0.1)).indices] = True
        assert torch.equal(masks[name].flatten(), expected), name
    # pure post-hoc: its training FLOPs are the dense run's plus the BatchNorm re-estimation's forward passes
    bn = results["posthoc"]["bn_reestimation"]
    assert bn["examples"] == 1437 and bn["gradient_steps"] == 0 and bn["forward_mode"] == "lrt"
    assert results["posthoc"]["train_flops"] == pytest.approx(results["dense_vi"]["train_flops"] + bn["train_flops"])
    assert results["posthoc"]["train_flops_this_run"] == pytest.approx(bn["train_flops"])


def test_posthoc_needs_a_finished_matching_dense_vi_source(runs, tmp_path):
    root, _ = runs
    posthoc = {**TINY, "method": "posthoc", "epochs": 0}
    with pytest.raises(ConfigError) as info:
        build_run(RunConfig.from_dict({**posthoc, "init_from": str(tmp_path / "none")}))
    assert str(tmp_path / "none") in str(info.value) and "finish" in str(info.value) and "dense_vi" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_run(RunConfig.from_dict({**posthoc, "init_from": str(root / "ssvi"), "width": 0.25}))
    assert "method: 'ssvi' there" in str(info.value) and "width: 0.125 there, 0.25 here" in str(info.value)


def test_training_flops_ordering(runs):
    _, r = runs
    dense, gradual, static, ssvi = (r[m]["train_flops"] for m in ("dense_vi", "gradual_pruning", "static_sparse", "ssvi"))
    assert dense > gradual > ssvi > static
    # SSVI pays one dense-gradient step per delta_t (= 4 here, frequent) while updating: close to static
    assert ssvi < 1.5 * static
    assert r["ssvi"]["test_flops"] == pytest.approx(r["static_sparse"]["test_flops"])


def test_a_baseline_is_one_file_as_the_readme_shows(tmp_path):
    """docs/adding-a-method.md's worked example, copied from a temporary file, runs one epoch through the same entry point."""
    readme = (REPO / "docs" / "adding-a-method.md").read_text()
    example = re.search(r"```python\n# baselines/random_regrowth.py\n(.*?)```", readme, re.S).group(1)
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "random_regrowth.py").write_text(example)
    out = tmp_path / "run"
    env = {**os.environ, "SSVI_EXTRA_BASELINES": str(plugin_dir)}
    command = [sys.executable, "-m", "ssvi", "train", "--out", str(out), "--quiet", "--set=method=random_regrowth",
               *[f"--set={k}={v}" for k, v in {**TINY, "epochs": 1, "delta_t": 2}.items()]]
    subprocess.run(command, cwd=REPO, env=env, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "random_regrowth" and metrics["density"] == pytest.approx(0.1, abs=1e-3)
    assert json.loads((out / "subspace.json").read_text()), "the subspace was never updated"
