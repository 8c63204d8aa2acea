"""Run configs: defaults are the recipe; bad values stop at once naming the key and the allowed values.

    python -m pytest tests/test_config.py -x -q
"""

import pytest

from ssvi.cli import main
from ssvi.config import ConfigError, RunConfig, coerce_numbers, load_config, load_yaml, parse_override


def test_defaults_are_the_authors_recipe():
    cfg = RunConfig()
    assert (cfg.lr, cfg.lr_rho, cfg.momentum, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (0.01, 0.01, 0.9, 5e-4, 200, 128)
    assert (cfg.kl_scale, cfg.prior_std, cfg.delta_t, cfg.t_end_frac, cfg.alpha) == (0.01, 0.005, 100, 0.75, 0.3)
    assert cfg.criterion == "SNR_mean_abs"


@pytest.mark.parametrize("values, key, allowed", [
    ({"densty": 0.1}, "densty", "density"),
    ({"density": 0.0}, "density", "(0.0, 1.0]"),
    ({"density": 1.5}, "density", "(0.0, 1.0]"),
    ({"lr": -0.1}, "lr", "(0.0, 100.0]"),
    ({"method": "sgld"}, "method", "ssvi"),
    ({"dataset": "imagenet"}, "dataset", "cifar10"),
    ({"arch": "resnet1000"}, "arch", "resnet18"),
    ({"criterion": "magnitude"}, "criterion", "SNR_mean_abs"),
    ({"epochs": 0}, "epochs", ">= 1"),
    ({"batch_size": 2.5}, "batch_size", "integer"),
    ({"dense_first_layer": "yes"}, "dense_first_layer", "true or false"),
    ({"device": "tpu"}, "device", "cuda"),
    ({"method": "posthoc"}, "init_from", "dense_vi"),
])
def test_bad_values_name_key_and_allowed(values, key, allowed):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert key in str(error.value) and allowed in str(error.value)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: static_sparse\ndensity: 0.05\nlr: 1\n")
    cfg = load_config(path, {"seed": 3})
    assert (cfg.method, cfg.density, cfg.lr, cfg.seed) == ("static_sparse", 0.05, 1.0, 3)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--set", "density=2"]) == 2
    assert "density=2.0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_options_lists_every_key(capsys):
    assert main(["options"]) == 0
    text = capsys.readouterr().out
    for key in RunConfig().to_dict():
        assert key in text


@pytest.mark.parametrize("key, value", [
    ("lr", float("inf")), ("kl_scale", float("inf")), ("width", float("inf")), ("lr_rho", float("inf")),
    ("prior_std", float("inf")), ("sigma_init", 1000.0), ("sigma_init", float("nan")), ("lr", 0.0),
    ("mu_init_std", float("inf")), ("weight_decay", float("inf")), ("lam", float("inf")),
])
def test_numeric_keys_are_bounded_to_finite_ranges(key, value):
    with pytest.raises(ConfigError, match=f"{key}=.* is out of range; allowed: "):
        RunConfig.from_dict({key: value})


@pytest.mark.parametrize("values, message", [
    ({"seed": 2**32}, "seed=4294967296 must be an integer in [0, 4294967295]"),
    ({"device": "cuda:abc"}, "device='cuda:abc' is not allowed; allowed: auto, cpu, cuda, cuda:N"),
    ({"arch": "timm/doesnotexist"}, "arch='timm/doesnotexist' is not a timm model"),
])
def test_values_that_used_to_fail_only_at_run_time_fail_validation(values, message):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert message in str(error.value)


def test_known_timm_models_and_cuda_indices_pass_validation():
    assert RunConfig.from_dict({"arch": "timm/resnet18", "device": "cuda:1"}).device == "cuda:1"


def test_exponent_numbers_from_yaml_and_set_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nkl_scale: 5E-2\nprior_std: 1.0e+0\n")
    cfg = load_config(path, dict([parse_override("lr_rho=2e-3")]))
    assert (cfg.lr, cfg.kl_scale, cfg.prior_std, cfg.lr_rho) == (1e-3, 5e-2, 1.0, 2e-3)
    assert RunConfig.from_dict({"sigma_init": "1e-4"}).sigma_init == 1e-4  # e.g. a config loaded by snakemake
    with pytest.raises(ConfigError, match="criterion=0.001 must be a string"):
        RunConfig.from_dict({"criterion": 1e-3})
    with pytest.raises(ConfigError, match="lr='fast' must be a number"):
        RunConfig.from_dict({"lr": "fast"})


def test_load_yaml_reads_exponents_as_floats_everywhere(tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_text("densities: [1e-1, 5e-2]\nrun: {lr: 1e-3, name: '1e-3'}\n")
    assert load_yaml(path) == {"densities": [0.1, 0.05], "run": {"lr": 0.001, "name": "1e-3"}}
    assert coerce_numbers({"a": ["1e-3", "x", 2], "b": "2E5"}) == {"a": [0.001, "x", 2], "b": 200000.0}


def test_duplicate_yaml_keys_are_refused_naming_key_and_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.1\nepochs: 3\nlr: 0.2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"config file {path}: key 'lr' appears twice (lines 1 and 3); keep one"


def test_yaml_syntax_errors_name_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: ssvi\nlr: [0.1\nepochs: 3\n")
    with pytest.raises(ConfigError, match=f"config file {path} line [0-9]+ is not valid YAML"):
        load_config(path)


def test_config_naming_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"config file {tmp_path} is a directory; name a YAML file"):
        load_config(tmp_path)
