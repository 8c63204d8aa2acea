"""The uncertainty views beyond the paper's metrics: adaptive ECE, selective prediction (AURC, AUGRC, the
risk–coverage curve), reliability bins and cross-fitted temperature scaling, each against a maintained
implementation (torch-uncertainty 0.13, netcal) and hand-computed cases (ties, one bin, perfect and
inverted confidence, n = 2).

    python -m pytest tests/test_views.py -q
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvi.metrics import adaptive_ece, classification_metrics, reliability_bins
from ssvi.selective import aurc, augrc, risk_coverage
from ssvi.temperature import T_MAX, T_MIN, cross_fitted, fit_temperature, folds
from ssvi.views import predictive_views

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from predictions import miscalibrated  # noqa: E402


def _case(n=1000, c=10, seed=0, sharp=3.0):
    """Continuous (tie-free) miscalibrated predictions as tensors."""
    probs, labels = miscalibrated(n, c, seed, sharp)
    return torch.from_numpy(probs), torch.from_numpy(labels)


def _two_class(confidences, correct):
    """Two-class predictions with the given top-class confidences; label = the top class iff correct."""
    conf = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], 1)
    labels = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, labels


# --------------------------------------------------------------------------------------------
# adaptive ECE
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, n", [(0, 1000), (1, 347), (2, 15)])
def test_adaptive_ece_equals_torch_uncertainty(seed, n):
    from torch_uncertainty.metrics import AdaptiveCalibrationError
    probs, labels = _case(n=n, seed=seed)
    oracle = AdaptiveCalibrationError(task="multiclass", num_classes=10, num_bins=15, norm="l1")
    assert adaptive_ece(probs, labels) == pytest.approx(float(oracle(probs, labels)), abs=1e-6)  # it runs in float32


def test_adaptive_ece_hand_computed():
    # n = 2, one point per group: |1 - 0.9| and |0 - 0.6|, each weight 1/2
    probs, labels = _two_class([0.9, 0.6], [True, False])
    assert adaptive_ece(probs, labels) == pytest.approx((0.1 + 0.6) / 2)
    # one bin: with bins=1 it is |mean acc - mean conf|
    probs, labels = _two_class([0.9, 0.8, 0.7, 0.6], [True, True, False, True])
    assert adaptive_ece(probs, labels, bins=1) == pytest.approx(abs(0.75 - 0.75))
    assert adaptive_ece(probs, labels, bins=2) == pytest.approx(0.5 * abs(0.5 - 0.65) + 0.5 * abs(1 - 0.85))
    # perfect: confidence 1 and always right; inverted: confidence 1 and always wrong
    perfect = _two_class([1.0] * 6, [True] * 6)
    inverted = _two_class([1.0] * 6, [False] * 6)
    assert adaptive_ece(*perfect) == 0.0 and adaptive_ece(*inverted) == pytest.approx(1.0)


def test_adaptive_ece_ties_count_with_their_group_mean():
    # four points tied at 0.7, two groups: each group counts the tie group's mean correctness (0.5), whatever the order
    for hits in ([True, True, False, False], [False, True, False, True], [False, False, True, True]):
        probs, labels = _two_class([0.7, 0.7, 0.7, 0.7], hits)
        assert adaptive_ece(probs, labels, bins=2) == pytest.approx(0.7 - 0.5)


# --------------------------------------------------------------------------------------------
# selective prediction
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, n", [(0, 1000), (3, 57), (4, 2)])
def test_aurc_and_augrc_equal_torch_uncertainty(seed, n):
    from torch_uncertainty.metrics import AUGRC, AURC
    probs, labels = _case(n=n, seed=seed)
    for ours, oracle in ((aurc, AURC()), (augrc, AUGRC())):
        oracle.update(probs, labels)
        assert ours(probs, labels) == pytest.approx(float(oracle.compute()), abs=1e-6)


def test_risk_coverage_hand_computed():
    # confidences 0.9 (right), 0.8 (wrong), 0.7 (right): risks 0, 1/2, 1/3 at coverage 1/3, 2/3, 1
    probs, labels = _two_class([0.9, 0.8, 0.7], [True, False, True])
    area = (0.5 * (0 + 0.5) + 0.5 * (0.5 + 1 / 3)) / 3 / (1 - 1 / 3)
    assert aurc(probs, labels) == pytest.approx(area)
    general = (0.5 * (0 + 1 / 3) + 0.5 * (1 / 3 + 1 / 3)) / 3 / (1 - 1 / 3)  # risk x coverage = errors / n
    assert augrc(probs, labels) == pytest.approx(general)
    curve = risk_coverage(probs, labels, points=3)
    assert curve["coverage"] == pytest.approx([1 / 3, 2 / 3, 1]) and curve["risk"] == pytest.approx([0, 0.5, 1 / 3])


def test_selective_prediction_perfect_inverted_and_n_two():
    # perfect ranking: every error less confident than every right answer; inverted: the opposite
    perfect = _two_class([0.9, 0.8, 0.7, 0.6], [True, True, False, False])
    inverted = _two_class([0.9, 0.8, 0.7, 0.6], [False, False, True, True])
    assert aurc(*perfect) < aurc(*inverted)
    assert risk_coverage(*perfect, points=2)["risk"] == pytest.approx([0.0, 0.5])
    assert risk_coverage(*inverted, points=2)["risk"] == pytest.approx([1.0, 0.5])
    # n = 2: the curve has two points, risks (0, 1/2): trapezoid 1/8 over [1/2, 1], divided by 1/2
    assert aurc(*_two_class([0.9, 0.6], [True, False])) == pytest.approx(0.25)
    assert math.isnan(aurc(*_two_class([0.9], [True])))


def test_tied_confidences_count_their_mean_error():
    # three points tied: whichever order a sort picks, each counts the group's mean error 1/3
    one_order = _two_class([0.8, 0.8, 0.8, 0.6], [False, True, True, False])
    other_order = _two_class([0.8, 0.8, 0.8, 0.6], [True, True, False, False])
    assert aurc(*one_order) == aurc(*other_order)
    assert risk_coverage(*one_order, points=4)["risk"] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 2])


# --------------------------------------------------------------------------------------------
# reliability bins
# --------------------------------------------------------------------------------------------

def test_reliability_bins_pool_to_the_top_label_ece():
    probs, labels = _case(n=500, seed=5)
    bins = reliability_bins(probs, labels)
    assert sum(bins["count"]) == 500 and len(bins["count"]) == 15
    count, conf, correct = (np.array(bins[k]) for k in ("count", "confidence_sum", "correct_sum"))
    used = count > 0
    ece = np.sum(np.abs(correct[used] - conf[used])) / 500
    assert ece == pytest.approx(classification_metrics(probs, labels)["ece"], abs=1e-12)  # no confidence of 1.0
    one = reliability_bins(*_two_class([1.0, 0.99], [True, False]))
    assert one["count"][-1] == 2 and one["correct_sum"][-1] == 1  # 1.0 shares the last bin


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------

def test_fitted_temperature_equals_netcal():
    from netcal.scaling import TemperatureScaling
    probs, labels = _case(n=3000, seed=6)
    oracle = TemperatureScaling()
    oracle.fit(probs.numpy(), labels.numpy())
    # netcal multiplies the logits by its weight: our T (which divides them) is its inverse
    assert fit_temperature(probs, labels) == pytest.approx(1 / float(oracle.weights[0]), rel=1e-4)


def test_fitted_temperature_undoes_a_known_tempering():
    # labels drawn from softmax(z); predictions softmax(2 z): the NLL-optimal temperature is close to 2
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((20000, 5))
    truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = torch.from_numpy(np.array([rng.choice(5, p=p) for p in truth]))
    sharp = torch.softmax(torch.from_numpy(2 * logits), 1)
    assert fit_temperature(sharp, labels) == pytest.approx(2.0, rel=0.05)
    assert T_MIN <= fit_temperature(*_two_class([0.9] * 4, [True] * 4)) <= T_MAX


def test_the_temperature_is_never_fitted_on_the_points_it_scores():
    probs, labels = _case(n=400, seed=8)
    first = cross_fitted(probs, labels)
    half_a, half_b = folds(400)
    # change the labels of half b only: T fitted on half a (which scores half b) must not move, nor
    # the calibrated probabilities of half b; T fitted on half b does move
    changed = labels.clone()
    changed[half_b] = (changed[half_b] + 1) % 10
    second = cross_fitted(probs, changed)
    assert second["temperatures"][0] == first["temperatures"][0]
    assert torch.equal(second["probs"][half_b], first["probs"][half_b])
    assert second["temperatures"][1] != pytest.approx(first["temperatures"][1], rel=1e-3)
    assert not torch.equal(second["probs"][half_a], first["probs"][half_a])


def test_folds_are_halves_shared_by_every_run_of_a_test_set():
    a, b = folds(11)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(11)) and (len(a), len(b)) == (5, 6)
    assert torch.equal(folds(11)[0], a)
    with pytest.raises(ValueError, match="at least 4"):
        cross_fitted(*_two_class([0.9, 0.8, 0.7], [True] * 3))


def test_predictive_views_record_every_view():
    probs, labels = _case(n=200, seed=9)
    views = predictive_views(probs, labels)
    assert {"ace", "aurc", "augrc"} <= set(views["metrics"])
    assert set(views["temperature_scaled"]) == {"nll", "ece", "ace", "brier", "temperatures", "unfitted",
                                                "at_limit", "rule"}
    assert views["temperature_scaled"]["nll"] < views["metrics"]["nll"]  # the miscalibrated case improves
    assert len(views["curves"]["risk_coverage"]["risk"]) == 50
