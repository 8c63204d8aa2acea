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
from ssvi.config import RunConfig
from ssvi.methods import list_methods
from ssvi.subspace import num_kept
from ssvi.trainer import build_run

REPO = Path(__file__).resolve().parent.parent
TINY = {"width": 0.125, "image_size": 8, "epochs": 3, "delta_t": 4, "threads": 1, "num_samples": 2, "density": 0.1}


def _train(out: Path, **values) -> dict:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **values}.items()]
    assert main(["train", "--out", str(out), "--quiet", *sets]) == 0
    return json.loads((out / "metrics.json").read_text())


def _masks(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "model.pt", weights_only=False)["model"]
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
    dense = torch.load(root / "dense_vi" / "model.pt", weights_only=False)["model"]
    masks = _masks(root / "posthoc")
    assert set(results["posthoc"]["layer_densities"]) < set(masks)
    for name in results["posthoc"]["layer_densities"]:
        mu, rho = dense[f"{name}.weight_mu"], dense[f"{name}.weight_rho"]
        snr = criteria.score("snr", mu, torch.nn.functional.softplus(rho)).flatten()
        expected = torch.zeros_like(snr, dtype=torch.bool)
        expected[torch.topk(snr, num_kept(snr.numel(), 0.1)).indices] = True
        assert torch.equal(masks[name].flatten(), expected), name
    # pure post-hoc: its training FLOPs are the dense run's
    assert results["posthoc"]["train_flops"] == results["dense_vi"]["train_flops"]


def test_training_flops_ordering(runs):
    _, r = runs
    dense, gradual, static, ssvi = (r[m]["train_flops"] for m in ("dense_vi", "gradual_pruning", "static_sparse", "ssvi"))
    assert dense > gradual > ssvi > static
    # SSVI pays one dense-gradient step per delta_t (= 4 here, frequent) while updating: close to static
    assert ssvi < 1.5 * static
    assert r["ssvi"]["test_flops"] == pytest.approx(r["static_sparse"]["test_flops"])


def test_a_baseline_is_one_file_as_the_readme_shows(tmp_path):
    """The README's worked example, copied from a temporary file, runs one epoch through the same entry point."""
    readme = (REPO / "README.md").read_text()
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
