"""The loss hooks of a method (``Method.kl_weight``, ``Method.extra_loss``) as the trainer calls them, and the
KL-weight variant of docs/adding-a-method.md loaded as a plugin file. One epoch of a tiny net each.

    .venv/bin/python -m pytest tests/test_hooks.py -q
"""

import math
import sys
from pathlib import Path

import pytest
import torch

from ssvi import methods, trainer
from ssvi.config import ConfigError, RunConfig
from ssvi.layers import bayesian_layers
from ssvi.methods import EXTRA_BASELINES_ENV, Method
from ssvi.trainer import build_run, train_one_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from docs_examples import write_kl_weight_plugin  # noqa: E402

TINY = {"width": 0.125, "image_size": 8, "epochs": 2, "threads": 1, "num_samples": 2}
EXTRA_TERM = 3.0
MEAN_LOGIT_SCALE = 5.0


class QuarterKL(Method):
    def kl_weight(self, weight, epoch):
        return 0.25 * weight


class ConstantTerm(Method):
    seen: list = []

    def extra_loss(self, logits, labels):
        self.seen.append((tuple(logits.shape), tuple(labels.shape), logits.dtype))
        return torch.tensor(EXTRA_TERM)


class MeanLogit(Method):
    def extra_loss(self, logits, labels):
        return MEAN_LOGIT_SCALE * logits.mean()


@pytest.fixture
def registry(monkeypatch):
    """A registry holding the built-in methods and the test's own (registered afresh per test)."""
    methods.load_plugins()
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    for name, cls in {"quarter_kl": QuarterKL, "constant_term": ConstantTerm, "mean_logit": MeanLogit}.items():
        methods.register_method(name)(cls)
    return monkeypatch


def epoch(method: str, **values) -> tuple[dict, trainer.Run]:
    run = build_run(RunConfig.from_dict({**TINY, "method": method, **values}))
    run.method.initialize(run.model)
    return train_one_epoch(run), run


def recipe_weight(run: trainer.Run) -> float:
    return trainer.kl_weight(run.cfg, 1, len(run.data.y_train))


def test_kl_weight_hook_sets_the_weight_of_the_kl_term(registry):
    row, run = epoch("quarter_kl")
    assert row["kl_weight"] == pytest.approx(0.25 * recipe_weight(run)) and row["kl"] > 0
    assert row["loss"] == pytest.approx(row["ce"] + row["kl_weight"] * row["kl"], rel=1e-6)
    dense, run = epoch("dense_vi")  # the default hook keeps the recipe's weight
    assert dense["kl_weight"] == pytest.approx(recipe_weight(run))


def test_extra_loss_is_added_to_every_step_and_trained_through(registry):
    ConstantTerm.seen.clear()
    row, run = epoch("constant_term")
    assert row["loss"] == pytest.approx(row["ce"] + row["kl_weight"] * row["kl"] + EXTRA_TERM, rel=1e-6)
    assert len(ConstantTerm.seen) == run.steps_per_epoch
    assert all(logits[1] == run.data.num_classes and logits[0] == labels[0] and dtype == torch.float32
               for logits, labels, dtype in ConstantTerm.seen)
    # a term with a gradient is trained through: c * mean(logits) moves each class's output bias by -lr * c / C
    # in the first step (from the same state and noise as a run without it)
    bias_after = []
    for method in ("mean_logit", "dense_vi"):
        run = build_run(RunConfig.from_dict({**TINY, "method": method}))
        trainer.train_step(run, run.data.x_train[:64].float(), run.data.y_train[:64], beta=0.0)
        bias_after.append(list(bayesian_layers(run.model).values())[-1].bias.detach())
    expected = -run.cfg.lr * MEAN_LOGIT_SCALE / run.data.num_classes
    assert torch.allclose(bias_after[0] - bias_after[1], torch.full_like(bias_after[0], expected), rtol=1e-3, atol=1e-7)


def test_the_docs_kl_weight_variant_halves_the_kl_weight_and_checks_its_option(registry, tmp_path):
    registry.setattr(methods, "_plugins_loaded", False)
    registry.setenv(EXTRA_BASELINES_ENV, str(tmp_path))
    write_kl_weight_plugin(tmp_path)
    row, run = epoch("dense_vi_klw", extra={"kl_factor": 0.5})
    assert row["kl_weight"] == pytest.approx(0.5 * recipe_weight(run))
    assert math.isclose(epoch("dense_vi_klw")[0]["kl_weight"], recipe_weight(run))  # no option: dense VI
    with pytest.raises(ConfigError, match="kl_factor='half' must be a number >= 0"):
        RunConfig.from_dict({**TINY, "method": "dense_vi_klw", "extra": {"kl_factor": "half"}})
    with pytest.raises(ConfigError, match="extra key.*'kl_factor' are not read by method 'dense_vi'"):
        RunConfig.from_dict({**TINY, "method": "dense_vi", "extra": {"kl_factor": 0.5}})
