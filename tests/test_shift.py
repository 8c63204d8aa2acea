"""OOD and shift evaluation: deterministic corruptions, the embedded OOD set, and a finished run evaluated."""

import json

import pytest
import torch

from ssvi.config import RunConfig
from ssvi.data import load_dataset
from ssvi.shift import DIGITS_CORRUPTIONS, RESULT_FILE, SEVERITIES, corrupt, evaluate_run, natural_patches
from ssvi.trainer import run


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", image_size=8)


@pytest.mark.parametrize("name", DIGITS_CORRUPTIONS)
def test_corruptions_are_deterministic_per_seed_and_grow_with_severity(digits, name):
    x = digits.x_test[:64]
    first = corrupt(x, name, 3, torch.Generator().manual_seed(0))
    again = corrupt(x, name, 3, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    if name.endswith("noise"):
        assert not torch.equal(first, corrupt(x, name, 3, torch.Generator().manual_seed(1)))
    distances = [(corrupt(x, name, s, torch.Generator().manual_seed(0)) - x).abs().mean().item() for s in SEVERITIES]
    assert distances[0] > 0 and distances[-1] > distances[0]
    with pytest.raises(ValueError):
        corrupt(x, name, 6, torch.Generator())


def test_natural_patches_are_seeded_photo_crops():
    a, b = natural_patches(20, 8, seed=0), natural_patches(20, 8, seed=0)
    assert torch.equal(a, b) and a.shape == (20, 1, 8, 8)
    assert not torch.equal(a, natural_patches(20, 8, seed=1))
    assert a.std() > 0.01  # real image content, not a constant


def test_evaluate_finished_run(tmp_path):
    cfg = RunConfig.from_dict({"width": 0.125, "image_size": 8, "epochs": 1, "delta_t": 2, "threads": 1, "num_samples": 2,
                               "eval_batch_size": 2000})
    run(cfg, tmp_path)
    result = evaluate_run(tmp_path)
    assert json.loads((tmp_path / RESULT_FILE).read_text())["ood_sets"] == ["natural_patches"]
    scores = result["ood"]["natural_patches"]
    assert set(scores) == {"max_prob", "neg_entropy", "neg_mutual_info"}
    for values in scores.values():
        assert 0 <= values["auroc"] <= 1 and 0 <= values["fpr95"] <= 1
    assert len(result["shift"]) == len(DIGITS_CORRUPTIONS) * len(SEVERITIES)
    assert [r["severity"] for r in result["shift_by_severity"]] == list(SEVERITIES)
    assert result["num_samples"] == 2
