"""Tests of ssvi.metrics against independent numpy / hand computations."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import calibration
from ssvi.metrics import METRIC_VARIANTS, classification_metrics, ood_metrics, uncertainty_scores

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from predictions import miscalibrated  # noqa: E402

KEYS = {"acc", "nll", "ece", "ace", "ece_ssvi", "brier", "aurc", "augrc", "nll_floor_hits"}


def _numpy_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label L1 ECE, equal-width bins [k/n, (k+1)/n) (a confidence of 1.0 gets its own bin,
    as in torchmetrics)."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    idx = np.floor(conf * n_bins).astype(int)
    ece = 0.0
    for b in np.unique(idx):
        sel = idx == b
        ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return ece


def test_nll_counts_the_test_points_at_the_probability_floor():
    # the authors' NLL is inf as soon as one true-label probability underflows to 0; ours is finite, and
    # the count makes that difference visible
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 1, 0, 1])
    m = classification_metrics(probs, labels)
    assert m["nll_floor_hits"] == 2
    assert math.isfinite(m["nll"])
    assert m["nll"] == pytest.approx((2 * -math.log(1e-12) + math.log(2)) / 4, rel=1e-9)


def _random_case(n=2000, c=10, seed=0, sharp=3.0):
    return miscalibrated(n, c, seed, sharp)


# --------------------------------------------------------------------------------------------
# classification_metrics
# --------------------------------------------------------------------------------------------

def test_hand_computed_small_case():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    m = classification_metrics(probs, labels)
    assert set(m) == KEYS and all(isinstance(m[k], float) for k in KEYS - {"nll_floor_hits"})
    assert m["nll_floor_hits"] == 0
    assert m["acc"] == pytest.approx(0.75)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + math.log(0.6) + math.log(0.7)) / 4, rel=1e-6)
    # sum over classes of squared errors: 0.02, 1.62, 0.32, 0.18
    assert m["brier"] == pytest.approx((0.02 + 1.62 + 0.32 + 0.18) / 4, rel=1e-6)
    # bins (width 1/15): conf 0.9 x2 -> bin 13 (acc 0.5), 0.6 -> bin 9 (acc 1), 0.7 -> bin 10 (acc 1)
    assert m["ece"] == pytest.approx(0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3, abs=1e-6)
    assert math.isfinite(m["ece_ssvi"]) and m["ece_ssvi"] >= 0


def test_random_case_against_numpy():
    probs, labels = _random_case()
    m = classification_metrics(torch.from_numpy(probs).float(), torch.from_numpy(labels))
    p_true = probs[np.arange(len(labels)), labels]
    onehot = np.eye(probs.shape[1])[labels]
    assert m["acc"] == pytest.approx((probs.argmax(1) == labels).mean(), abs=1e-12)
    assert m["nll"] == pytest.approx(-np.log(np.maximum(p_true, 1e-12)).mean(), rel=1e-5)
    assert m["brier"] == pytest.approx(((probs - onehot) ** 2).sum(1).mean(), rel=1e-5)
    assert m["ece"] == pytest.approx(_numpy_ece(probs, labels), abs=1e-5)
    assert m["ece"] > 0.02  # the case is miscalibrated on purpose


def test_ece_ssvi_equals_package_call():
    probs, labels = _random_case(n=3000, seed=1)
    m = classification_metrics(torch.from_numpy(probs), torch.from_numpy(labels))
    expected = calibration.get_calibration_error(probs, labels)
    assert math.isfinite(m["ece_ssvi"]) and m["ece_ssvi"] > 0
    assert m["ece_ssvi"] == pytest.approx(float(expected), rel=1e-12)


def test_perfect_confident_predictions():
    labels = torch.tensor([0, 1, 2, 3, 1, 0, 2, 3] * 4)
    probs = torch.nn.functional.one_hot(labels, 4).float()
    m = classification_metrics(probs, labels)
    assert m["acc"] == 1.0
    assert m["ece"] == pytest.approx(0.0, abs=1e-7)
    assert m["nll"] == pytest.approx(0.0, abs=1e-7)
    assert m["brier"] == pytest.approx(0.0, abs=1e-12)
    assert m["ece_ssvi"] == pytest.approx(0.0, abs=1e-12)


def test_nll_clamps_zero_probability():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    m = classification_metrics(probs, labels)
    assert m["nll"] == pytest.approx(-math.log(1e-12) / 2)
    assert m["brier"] == pytest.approx(1.0)
    assert m["acc"] == 0.5


def _package_cases():
    """(probs, labels) cases for the oracle tests: continuous, one-hot and coarsely rounded (the package's
    distinct-value binning), tiny n (fewer points than bins), two classes, and exact ties."""
    rng = np.random.default_rng(5)
    cases = [_random_case(n=n, c=c, seed=seed, sharp=sharp)
             for n, c, seed, sharp in [(3000, 10, 1, 3.0), (500, 3, 2, 1.0), (40, 10, 3, 5.0), (7, 4, 4, 2.0),
                                       (2, 2, 5, 1.0), (200, 2, 6, 0.3)]]
    labels = rng.integers(0, 4, 64)
    cases.append((np.eye(4)[labels], labels))  # one-hot, all correct
    cases.append((np.eye(4)[np.roll(labels, 1)], labels))  # one-hot, mostly wrong
    probs, labels = _random_case(n=400, c=5, seed=7)
    rounded = np.round(probs, 1)
    cases.append((rounded / rounded.sum(1, keepdims=True), labels))  # few distinct values per column
    cases.append((np.full((30, 3), 1 / 3), rng.integers(0, 3, 30)))  # every probability tied
    return cases


@pytest.mark.parametrize("case", range(10))
def test_ece_ssvi_equals_the_package(case):
    probs, labels = _package_cases()[case]
    ours = classification_metrics(torch.from_numpy(probs), torch.from_numpy(labels))["ece_ssvi"]
    expected = float(calibration.get_calibration_error(probs, labels))
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ece_equals_torchmetrics(dtype):
    from torchmetrics.classification import MulticlassCalibrationError
    probs, labels = _random_case(n=1500, c=10, seed=8, sharp=4.0)
    probs = torch.from_numpy(probs).to(dtype)
    probs[:5] = torch.nn.functional.one_hot(torch.arange(5), 10).to(dtype)  # confidence exactly 1.0
    labels = torch.from_numpy(labels)
    expected = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(probs, labels)
    # torchmetrics accumulates in float32 whatever the input; ours is float64
    assert classification_metrics(probs, labels)["ece"] == pytest.approx(float(expected), abs=1e-6)


def test_input_validation():
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    with pytest.raises(ValueError):
        classification_metrics(torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([0, 1]))  # logits
    with pytest.raises(ValueError):
        classification_metrics(probs, torch.tensor([0, 2]))  # label out of range
    with pytest.raises(ValueError):
        classification_metrics(probs * 0.5, torch.tensor([0, 1]))  # rows do not sum to 1
    with pytest.raises(ValueError):
        classification_metrics(probs, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_metric_variants_describe_every_key():
    assert set(METRIC_VARIANTS) == KEYS
    assert "15 equal-width" in METRIC_VARIANTS["ece"] and "equal-mass" in METRIC_VARIANTS["ece_ssvi"]


# --------------------------------------------------------------------------------------------
# ood_metrics
# --------------------------------------------------------------------------------------------

def test_ood_perfect_separation():
    m = ood_metrics(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2]))
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_ood_identical_distributions():
    m = ood_metrics(torch.zeros(100), torch.zeros(100))
    assert m["auroc"] == pytest.approx(0.5)
    assert m["fpr95"] == 1.0
    scores = torch.tensor([0.0, 1.0] * 50)  # same 50/50 mixture of two tied values on both sides
    assert ood_metrics(scores, scores.flip(0))["auroc"] == pytest.approx(0.5)


def test_ood_hand_computed():
    # pairs (in, out): (0,1) lose, (0,-1) win, (2,1) win, (2,-1) win -> AUROC 3/4
    m = ood_metrics(torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0]))
    assert m["auroc"] == pytest.approx(0.75)
    # ranking 2(in) 1(out) 0(in) -1(out): AP = 0.5*1 + 0.5*(2/3)
    assert m["aupr_in"] == pytest.approx(5 / 6, rel=1e-6)
    # OOD positive, ranked by the negated score: -1(out) 0(in) 1(out) 2(in): AP = 0.5*1 + 0.5*(2/3)
    assert m["aupr_out"] == pytest.approx(5 / 6, rel=1e-6)
    lopsided = ood_metrics(torch.tensor([3.0, 2.0, 1.5]), torch.tensor([1.0]))  # -1(out) first: AUPR-Out 1
    assert lopsided["aupr_out"] == pytest.approx(1.0) and lopsided["aupr_in"] == pytest.approx(1.0)
    swapped = ood_metrics(torch.tensor([3.0, 0.5]), torch.tensor([1.0]))  # out ranks 2nd of 3 by -score
    assert swapped["aupr_out"] == pytest.approx(1 / 2) and swapped["aupr_in"] == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
    assert m["fpr95"] == pytest.approx(0.5)  # TPR 100% needs threshold 0, which passes out score 1
    flipped = ood_metrics(-torch.tensor([0.0, 2.0]), -torch.tensor([1.0, -1.0]))
    assert flipped["auroc"] == pytest.approx(0.25)


def test_fpr95_constructed():
    scores_in = torch.arange(1, 101, dtype=torch.float32)  # 95 % TPR <=> threshold 6
    scores_out = torch.tensor([4.5, 5.5, 6.0, 50.0, 200.0])
    assert ood_metrics(scores_in, scores_out)["fpr95"] == pytest.approx(3 / 5)


def test_ood_equals_torchmetrics_with_ties_and_large_scores():
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision
    rng = np.random.default_rng(1)
    s_in = torch.from_numpy(np.round(rng.normal(3.0, 2.0, 900), 1))
    s_out = torch.from_numpy(np.round(rng.normal(2.0, 2.0, 300), 1))
    m = ood_metrics(s_in, s_out)
    # torchmetrics squashes scores outside [0, 1] with a sigmoid: hand it an order-preserving map instead
    scores = torch.cat([s_in, s_out])
    preds = (scores - scores.min()) / (scores.max() - scores.min())
    target = torch.cat([torch.ones(900, dtype=torch.long), torch.zeros(300, dtype=torch.long)])
    # torchmetrics returns float32; ours is the exact fraction in float64
    assert m["auroc"] == pytest.approx(float(BinaryAUROC()(preds, target)), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(float(BinaryAveragePrecision()(preds, target)), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(float(BinaryAveragePrecision()(1 - preds, 1 - target)), abs=1e-6)


def test_ood_against_sklearn_large_scores_and_ties():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    # large magnitudes (a sigmoid would saturate them in float32) and rounded values (ties)
    s_in = np.round(rng.normal(60.0, 5.0, 700), 1)
    s_out = np.round(rng.normal(55.0, 6.0, 400), 1)
    m = ood_metrics(torch.from_numpy(s_in).float(), torch.from_numpy(s_out).float())
    y = np.r_[np.ones_like(s_in), np.zeros_like(s_out)]
    s = np.r_[s_in, s_out].astype(np.float32)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-5)
    assert m["aupr_out"] == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-5)
    fpr, tpr, _ = skm.roc_curve(y, s)
    assert m["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


# --------------------------------------------------------------------------------------------
# uncertainty_scores
# --------------------------------------------------------------------------------------------

def test_uncertainty_scores_constructed():
    log2 = math.log(2.0)
    sample_probs = torch.tensor([
        # input 0: two samples confidently disagree -> high epistemic uncertainty
        # input 1: both samples say 50/50 -> aleatoric only, MI = 0
        # input 2: both confident and agreeing
        [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
        [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]],
    ])
    u = uncertainty_scores(sample_probs)
    torch.testing.assert_close(u["max_prob"], torch.tensor([0.5, 0.5, 1.0]))
    torch.testing.assert_close(u["neg_entropy"], torch.tensor([-log2, -log2, 0.0]))
    torch.testing.assert_close(u["neg_mutual_info"], torch.tensor([-log2, 0.0, 0.0]))
    for v in u.values():
        assert v.shape == (3,) and v.dtype == torch.float32


def test_uncertainty_scores_against_numpy():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4) * 0.7, size=(5, 7))  # K=5, N=7, C=4
    u = uncertainty_scores(torch.from_numpy(p))
    mean = p.mean(0)

    def entropy(q):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(q > 0, q * np.log(q), 0.0).sum(-1)

    np.testing.assert_allclose(u["max_prob"].numpy(), mean.max(1), rtol=1e-12)
    np.testing.assert_allclose(u["neg_entropy"].numpy(), -entropy(mean), rtol=1e-12)
    np.testing.assert_allclose(u["neg_mutual_info"].numpy(), -(entropy(mean) - entropy(p).mean(0)), rtol=1e-10)
    assert (u["neg_mutual_info"] <= 0).all()


def test_uncertainty_scores_bad_shape():
    with pytest.raises(ValueError):
        uncertainty_scores(torch.rand(4, 3))
