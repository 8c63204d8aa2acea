"""Run configs: defaults are the recipe; bad values stop at once naming the key and the allowed values."""

import pytest

from ssvi.cli import main
from ssvi.config import ConfigError, RunConfig, load_config


def test_defaults_are_the_authors_recipe():
    cfg = RunConfig()
    assert (cfg.lr, cfg.lr_rho, cfg.momentum, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (0.01, 0.01, 0.9, 5e-4, 200, 128)
    assert (cfg.kl_scale, cfg.prior_std, cfg.delta_t, cfg.t_end_frac, cfg.alpha) == (0.01, 0.005, 100, 0.75, 0.3)
    assert cfg.criterion == "SNR_mean_abs"


@pytest.mark.parametrize("values, key, allowed", [
    ({"densty": 0.1}, "densty", "density"),
    ({"density": 0.0}, "density", "(0.0, 1.0]"),
    ({"density": 1.5}, "density", "(0.0, 1.0]"),
    ({"lr": -0.1}, "lr", "[0.0, inf]"),
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
