"""The run grid (workflow/scripts/grid.py): paths, studies, seeds, and refusals of paths that collide.

    .venv/bin/python -m pytest tests/test_grid.py -q
"""

import copy
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402
from ssvi.config import ConfigError, RunConfig  # noqa: E402


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


SMALL = {"datasets": ["digits"], "archs": ["resnet18"], "seeds": [0],
         "methods": {"ssvi": [0.1]}, "run": {"delta_t": 10, "alpha": 0.3}}


def small(**changes) -> dict:
    return {**copy.deepcopy(SMALL), **changes}


@pytest.mark.parametrize("config", [
    small(methods={"ssvi": [0.1, 0.1000001]}),
    small(criteria_ablation={"dataset": "digits", "arch": "resnet18", "density": 0.1000001,
                             "criteria": ["SNR_mean_abs"]}),
], ids=["two densities of one method", "a study's density against the main grid's"])
def test_densities_that_print_alike_are_refused_naming_both(config):
    with pytest.raises(ConfigError) as error:
        grid.run_grid(config)
    message = str(error.value)
    assert "digits/resnet18/ssvi/default/d0.1/seed0" in message
    assert "density 0.1 and 0.1000001" in message


def test_a_run_shared_by_studies_is_one_run_not_a_collision():
    config = small(criteria_ablation={"dataset": "digits", "arch": "resnet18", "density": 0.1,
                                      "criteria": ["SNR_mean_abs", "mean"]},
                   schedule_ablation={"dataset": "digits", "arch": "resnet18", "density": 0.1,
                                      "delta_t": [10], "alpha": [0.3]})
    assert sorted(grid.run_grid(config)) == ["digits/resnet18/ssvi/crit-mean/d0.1/seed0",
                                             "digits/resnet18/ssvi/default/d0.1/seed0"]


def test_schedule_ablation_runs_every_delta_t_and_alpha_with_the_recipe_as_default():
    config = small(seeds=[0, 1], schedule_ablation={"dataset": "digits", "arch": "resnet18", "density": 0.1,
                                                    "delta_t": [5, 10], "alpha": [0.1, 0.3]})
    runs = grid.run_grid(config)
    variants = sorted({run.variant for run in runs.values()})
    assert variants == ["default", "dt10-a0.1", "dt5-a0.1", "dt5-a0.3"]
    assert len(runs) == 4 * 2  # 4 cells x 2 seeds; (10, 0.3) is the recipe's own = the main SSVI run
    run = runs["digits/resnet18/ssvi/dt5-a0.1/d0.1/seed1"]
    resolved = grid.expected_config(config, run)
    assert (resolved["delta_t"], resolved["alpha"], resolved["method"], resolved["seed"]) == (5, 0.1, "ssvi", 1)


def test_studies_and_archs_may_have_their_own_seeds():
    config = small(archs=["resnet18", "vgg16"], seeds=[0, 1, 2], arch_seeds={"vgg16": [0]},
                   methods={"dense_vi": [1.0]},
                   robustness={"dataset": "digits", "arch": "resnet18", "density": 0.1, "methods": ["ssvi"],
                               "sigma_init": [0.01], "kl_scale": [0.01], "seeds": [0]})
    paths = sorted(grid.run_grid(config))
    assert [p for p in paths if "/vgg16/" in p] == ["digits/vgg16/dense_vi/default/d1/seed0"]
    assert [p for p in paths if "/resnet18/dense_vi/" in p] == [
        f"digits/resnet18/dense_vi/default/d1/seed{s}" for s in range(3)]
    assert [p for p in paths if "sigma" in p] == ["digits/resnet18/ssvi/sigma0.01-kl0.01/d0.1/seed0"]


def test_paper_grid_has_the_schedule_ablation_of_the_paper():
    config = load("paper.yaml")
    study = config["schedule_ablation"]
    assert (study["dataset"], study["arch"], study["delta_t"], study["alpha"]) == (
        "cifar10", "resnet18", [25, 50, 100, 200, 400], [0.1, 0.3, 0.5])
    assert study["density"] == config["criteria_ablation"]["density"]
    runs = [run for run in grid.run_grid(config).values() if run.variant.startswith("dt")]
    assert len(runs) == (5 * 3 - 1) * len(config["seeds"])  # (100, 0.3) is the recipe: the default run


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test_dag.yaml", "test_slurm.yaml"])
def test_every_run_of_the_shipped_configs_is_a_valid_run_config(name):
    config = load(name)
    for run in grid.run_grid(config).values():
        RunConfig.from_dict(grid.run_overrides(config, run))


def test_embedded_default_is_a_miniature_of_the_paper():
    """Issue 15: >= 3 seeds for the ResNet-18 main comparison of every method at d = 0.1 and 0.05, the
    criteria, robustness and schedule studies on the same settings, VGG-16 kept."""
    config = load("config.yaml")
    runs = grid.run_grid(config).values()
    for method in ("dense_vi", "ssvi", "gradual_pruning", "posthoc", "static_sparse"):
        densities = [1.0] if method == "dense_vi" else [0.05, 0.1]
        for density in densities:
            seeds = {r.seed for r in runs if (r.arch, r.method, r.density) == ("resnet18", method, density)
                     and (r.variant == "default" or r.variant.startswith("ft"))}
            assert len(seeds) >= 3, (method, density, seeds)
    assert any(r.arch == "vgg16" for r in runs)
    for study in ("criteria_ablation", "robustness", "schedule_ablation"):
        assert config[study]["arch"] == "resnet18" and config[study]["dataset"] == "digits"
    variants = {r.variant for r in runs}
    assert any(v.startswith("crit-") for v in variants) and any(v.startswith("sigma") for v in variants)
    assert any(v.startswith("dt") for v in variants)


def test_a_methods_entry_with_options_gives_each_value_its_own_run_path_and_extra():
    config = small(run={"delta_t": 10, "epochs": 2}, methods={
        "ssvi": [0.1],  # the list form, as before
        "posthoc": [0.05, {"densities": [0.1], "extra": {"bn_reestimation": [True, False]}}],  # mixed, per entry
        "gradual_pruning": {"densities": [0.05, 0.1], "extra": {"tag": "a-b_1.5"}},  # one (word) value
    })
    runs = grid.run_grid(config)
    assert sorted(runs) == sorted([
        "digits/resnet18/ssvi/default/d0.1/seed0",
        "digits/resnet18/posthoc/ft0/d0.05/seed0",
        "digits/resnet18/posthoc/ft0+bn_reestimationtrue/d0.1/seed0",
        "digits/resnet18/posthoc/ft0+bn_reestimationfalse/d0.1/seed0",
        "digits/resnet18/gradual_pruning/default+taga-b_1.5/d0.05/seed0",
        "digits/resnet18/gradual_pruning/default+taga-b_1.5/d0.1/seed0",
        "digits/resnet18/dense_vi/default/d1/seed0",  # the post-hoc runs' source
    ])
    off = grid.run_overrides(config, runs["digits/resnet18/posthoc/ft0+bn_reestimationfalse/d0.1/seed0"])
    assert off["extra"] == {"bn_reestimation": False} and off["epochs"] == 0
    assert "extra" not in grid.run_overrides(config, runs["digits/resnet18/ssvi/default/d0.1/seed0"])
    assert grid.expected_config(config, runs["digits/resnet18/posthoc/ft0+bn_reestimationfalse/d0.1/seed0"])[
        "extra"] == {"bn_reestimation": False}
    # the run path names its options: they can be read back from the run's recorded extra
    assert grid.path_options("ft0+bn_reestimationfalse", {"bn_reestimation": False}) == {"bn_reestimation": False}
    assert grid.base_variant("default+kl_factor0.5+tagx") == "default"


def test_several_options_run_every_combination_and_add_to_the_runs_extra():
    config = small(run={"delta_t": 10, "extra": {"shared": 1}},
                   methods={"ssvi": {"densities": [0.1], "extra": {"b": [1, 2], "a": [0.5, 1e-3]}}})
    variants = sorted(run.variant for run in grid.run_grid(config).values())
    assert variants == ["default+a0.001+b1", "default+a0.001+b2", "default+a0.5+b1", "default+a0.5+b2"]
    run = grid.run_grid(config)["digits/resnet18/ssvi/default+a0.5+b2/d0.1/seed0"]
    assert grid.run_overrides(config, run)["extra"] == {"shared": 1, "a": 0.5, "b": 2}


@pytest.mark.parametrize("values, message", [
    ([0.5, 0.5000001], "two different runs map to the run path digits/resnet18/ssvi/default+k0.5/d0.1/seed0"),
    (["a/b"], "option value 'a/b' of a methods entry's extra cannot name a run path"),
])
def test_option_values_that_cannot_make_their_own_run_path_are_refused(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        grid.run_grid(small(methods={"ssvi": {"densities": [0.1], "extra": {"k": values}}}))


def test_options_a_method_does_not_read_are_refused_naming_the_key_and_the_method():
    config = small(methods={"dense_vi": {"densities": [1.0], "extra": {"kl_factor": [0.5]}}})
    [run] = grid.run_grid(config).values()
    with pytest.raises(ConfigError, match="extra key.*'kl_factor' are not read by method 'dense_vi'"):
        grid.expected_config(config, run)
