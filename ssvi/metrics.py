"""Evaluation metrics: classification (accuracy, NLL, three ECEs, Brier, selective prediction), OOD detection,
uncertainty scores.

Three calibration errors are reported because the paper's code and the literature differ (reference §5):

* ``ece`` — top-label L1 ECE with 15 equal-width bins (Guo et al. 2017), the definition of
  ``torchmetrics.classification.MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")``:
  bins are left-closed, [k/15, (k+1)/15), and a confidence of exactly 1.0 falls in a bin of its own.
* ``ace`` — adaptive (equal-mass) top-label L1 ECE: the test points sorted by confidence (ties in input
  order) and split into 15 groups whose sizes differ by at most one, larger groups first
  (``torch.tensor_split``); sum over groups of (n_b / n) |accuracy_b − mean confidence_b|. torch-uncertainty's
  ``AdaptiveCalibrationError(num_bins=15, norm="l1")``; with fewer than 15 points, empty groups are dropped.
* ``ece_ssvi`` — the authors' "ECE": ``calibration.get_calibration_error(probs, labels)`` of the
  PyPI package ``uncertainty-calibration`` 0.1.4 with its defaults: marginal (class-wise) L2
  calibration error, debiased, averaged over classes as sqrt(mean_k CE_k²), 15 equal-mass bins per
  class. When every class column has fewer than n/4 distinct probabilities (e.g. one-hot
  predictions) it bins by distinct value instead. The debiased estimate is clipped at 0 per class,
  so it can be exactly 0.0 on a small accurate test set.

Selective prediction (``aurc``, ``augrc``: :mod:`ssvi.selective`) ranks the test points by their maximum
probability. All of these are re-implemented here in float64 rather than imported: torchmetrics,
torch-uncertainty and uncertainty-calibration (which imports scikit-learn) cost seconds of start-up in every
training job. The test suite checks each against the packages themselves (tests/test_metrics.py,
tests/test_views.py), which stay test dependencies. The OOD metrics (AUROC, average precision) are
likewise exact closed forms checked against torchmetrics and scikit-learn.

OOD detection uses the convention "higher score = more in-distribution"; AUPR is reported both ways:
``aupr_in`` with the in-distribution test set as the positive class, ``aupr_out`` with the OOD set as the
positive class (scored by the negated score).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

__all__ = ["METRIC_VARIANTS", "OOD_METRIC_VARIANTS", "classification_metrics", "ood_metrics", "reliability_bins",
           "uncertainty_scores"]

log = logging.getLogger(__name__)

NLL_PROB_FLOOR = 1e-12
ECE_BINS = 15
FPR_AT_TPR = 0.95
_PROB_TOL = 1e-3  # tolerance of the probability checks (values in [0, 1], rows summing to 1)

METRIC_VARIANTS: dict[str, str] = {
    "acc": "top-1 accuracy, fraction in [0, 1]",
    "nll": f"mean negative log of the predicted probability of the true label (probabilities clamped at "
           f"{NLL_PROB_FLOOR:g}), natural log",
    "ece": f"top-label L1 ECE, {ECE_BINS} equal-width bins (Guo et al. 2017; torchmetrics "
           f"MulticlassCalibrationError's definition, norm='l1', computed in float64)",
    "ace": f"adaptive ECE: top-label L1 calibration error over {ECE_BINS} equal-mass bins of the test points sorted by "
           "confidence (torch-uncertainty AdaptiveCalibrationError's definition, norm='l1', computed in float64; tied "
           "confidences count with their tie group's mean correctness, so the order of test points does not matter)",
    "ece_ssvi": "authors' ECE: uncertainty-calibration 0.1.4 get_calibration_error with its defaults (class-wise, "
                "debiased, L2, 15 equal-mass bins), re-implemented in float64 and tested equal to the package",
    "aurc": "area under the risk-coverage curve: test points ranked by maximum probability (ties: their mean "
            "error), risk at coverage k/n = error rate of the k most confident, trapezoid over k/n = 1/n..1 divided "
            "by (1 - 1/n) (torch-uncertainty AURC's definition); lower is better",
    "augrc": "area under the generalized risk-coverage curve: as aurc with the risk at coverage k/n multiplied by "
             "k/n (errors among the k most confident / n; torch-uncertainty AUGRC, Traub et al. 2024); lower is better",
    "brier": "Brier score: mean over samples of the sum over classes of (p - onehot)^2 (range [0, 2])",
    "nll_floor_hits": f"test points whose true-label probability was below the NLL floor {NLL_PROB_FLOOR:g} "
                      "(the authors' NLL is inf whenever this is > 0)",
}


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

def _check_probs(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels, device=probs.device)
    if probs.ndim != 2:
        raise ValueError(f"probs must be N x C, got shape {tuple(probs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("no samples")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating tensor, got {probs.dtype}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    num_classes = probs.shape[1]
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs contain NaN or inf")
    if bool(((probs < -_PROB_TOL) | (probs > 1 + _PROB_TOL)).any()):
        raise ValueError("probs must be probabilities in [0, 1] (got values outside; logits?)")
    if bool(((probs.sum(1) - 1).abs() > _PROB_TOL).any()):
        raise ValueError("each row of probs must sum to 1")
    return probs.clamp(0.0, 1.0), labels.long()


def top_label_ece(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Top-label L1 ECE over ``bins`` equal-width bins [k/bins, (k+1)/bins), 1.0 in a bin of its own."""
    confidence, correct = _top_label(probs, labels)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=probs.device)
    index = torch.bucketize(confidence, edges, right=True) - 1
    count = torch.bincount(index, minlength=bins + 1).to(torch.float64)
    gap = (torch.bincount(index, weights=confidence, minlength=bins + 1)
           - torch.bincount(index, weights=correct, minlength=bins + 1)).abs()
    return float(gap.sum() / count.sum())  # sum_b (n_b / n) |conf_b - acc_b|, with n_b |...| = |sum conf - sum acc|


def _top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(confidence, correct) in float64: the maximum probability and whether its class is the label."""
    confidence, prediction = probs.to(torch.float64).max(1)
    return confidence, (prediction == labels).to(torch.float64)


def adaptive_ece(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Top-label L1 ECE over ``bins`` equal-mass groups of the points sorted by confidence; group sizes differ by
    at most one, the larger first; empty groups (n < bins) are dropped. Points of equal confidence count with
    their tie group's mean correctness, so a tie split by a group boundary gives the same value in any order of
    the test points (without ties this is torch-uncertainty's AdaptiveCalibrationError)."""
    confidence, correct = _top_label(probs, labels)
    order = torch.sort(confidence, stable=True).indices
    sorted_confidence = confidence[order]
    _, tie_group, tie_size = torch.unique_consecutive(sorted_confidence, return_inverse=True, return_counts=True)
    tie_hits = torch.zeros(len(tie_size), dtype=torch.float64).index_add_(0, tie_group, correct[order])
    hits_sorted = (tie_hits / tie_size)[tie_group]
    total = 0.0
    for conf, hits in zip(sorted_confidence.tensor_split(bins), hits_sorted.tensor_split(bins)):
        if len(conf):
            total += float((hits.sum() - conf.sum()).abs())  # n_b |acc_b - conf_b|
    return total / len(confidence)


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin [k/bins, (k+1)/bins) (the last one closed): the number of test points,
    their summed confidence and their number correct (reliability diagrams; sums pool over seeds)."""
    confidence, correct = _top_label(probs, labels)
    index = (confidence * bins).floor().long().clamp(0, bins - 1)
    return {"bins": bins,
            "count": torch.bincount(index, minlength=bins).tolist(),
            "confidence_sum": torch.bincount(index, weights=confidence, minlength=bins).tolist(),
            "correct_sum": torch.bincount(index, weights=correct, minlength=bins).tolist()}


def _equal_mass_edges(column: np.ndarray, bins: int) -> np.ndarray:
    """Upper bin edges: midpoints between ``bins`` (at most n) equal-count groups of the sorted values, then 1."""
    groups = np.array_split(np.sort(column), min(bins, len(column)))
    midpoints = [(lower[-1] + upper[0]) / 2.0 for lower, upper in zip(groups, groups[1:])]
    return np.unique(np.append(midpoints, 1.0))


def _distinct_value_edges(column: np.ndarray) -> np.ndarray:
    """Upper bin edges: midpoints between consecutive distinct values, then 1 (one bin per distinct value)."""
    values = np.unique(column)
    return np.append((values[:-1] + values[1:]) / 2.0, 1.0)


def _debiased_squared_ce(column: np.ndarray, hits: np.ndarray, edges: np.ndarray) -> float:
    """Debiased squared L2 calibration error of one class column, clipped at 0.

    Per bin b with n_b >= 2 points: (mean p - mean y)² - ȳ(1 - ȳ)/(n_b - 1), weighted by n_b / n;
    bins with fewer than two points contribute 0. A value goes to the first edge >= it.
    """
    index = np.searchsorted(edges, column)
    count = np.bincount(index, minlength=len(edges)).astype(np.float64)
    sum_p = np.bincount(index, weights=column, minlength=len(edges))
    sum_y = np.bincount(index, weights=hits, minlength=len(edges))
    used = count >= 2
    mean_p, mean_y, n_b = sum_p[used] / count[used], sum_y[used] / count[used], count[used]
    errors = (mean_p - mean_y) ** 2 - mean_y * (1.0 - mean_y) / (n_b - 1.0)
    return max(float(np.dot(n_b / len(column), errors)), 0.0)


def calibration_error_ssvi(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """The authors' ECE: uncertainty-calibration's ``get_calibration_error(probs, labels)`` with its defaults.

    sqrt of the mean over classes of the debiased squared calibration error of that class's column
    (one-vs-rest labels), binned by equal mass, or by distinct value when every column has fewer than
    n/4 distinct values (the package's test for outputs of a binning method).
    """
    p = probs.detach().to("cpu", torch.float64).numpy()
    onehot = np.eye(p.shape[1])[labels.detach().cpu().numpy()]
    columns = range(p.shape[1])
    discrete = all(len(np.unique(p[:, k])) < len(p) / 4.0 for k in columns)
    squared = [_debiased_squared_ce(p[:, k], onehot[:, k],
                                    _distinct_value_edges(p[:, k]) if discrete else _equal_mass_edges(p[:, k], bins))
               for k in columns]
    return float(np.mean(squared) ** 0.5)


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy, NLL, ECE (two variants) and Brier score of predicted probabilities.

    Args:
        probs: N x C predicted (e.g. posterior-averaged) probabilities; rows must sum to 1.
        labels: N integer labels in [0, C).

    Returns:
        ``{"acc", "nll", "ece", "ace", "ece_ssvi", "brier", "aurc", "augrc"}`` as Python floats and
        ``nll_floor_hits`` (an int); see :data:`METRIC_VARIANTS`.
    """
    from .selective import aurc, augrc
    probs, labels = _check_probs(probs, labels)
    p64 = probs.detach().to(torch.float64)
    idx = torch.arange(labels.shape[0], device=labels.device)
    p_true = p64[idx, labels]

    acc = (p64.argmax(1) == labels).to(torch.float64).mean()
    nll = -torch.log(p_true.clamp_min(NLL_PROB_FLOOR)).mean()
    onehot = torch.zeros_like(p64)
    onehot[idx, labels] = 1.0
    brier = ((p64 - onehot) ** 2).sum(1).mean()

    return {
        "acc": float(acc),
        "nll": float(nll),
        "ece": top_label_ece(probs.detach(), labels),
        "ace": adaptive_ece(probs.detach(), labels),
        "ece_ssvi": calibration_error_ssvi(probs, labels),
        "brier": float(brier),
        "aurc": aurc(probs.detach(), labels),
        "augrc": augrc(probs.detach(), labels),
        "nll_floor_hits": int((p_true < NLL_PROB_FLOOR).sum()),
    }


# --------------------------------------------------------------------------------------------
# Out-of-distribution detection
# --------------------------------------------------------------------------------------------

def _auroc(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve, ties counting one half: the Mann-Whitney U of midranks / (n_pos n_neg)."""
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    midranks = (ends - (counts - 1) / 2.0)[inverse]  # the mean of the 1-based ranks a tie group spans
    n_pos = positive.sum().to(torch.float64)
    n_neg = len(scores) - n_pos
    return (midranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_precision(scores: Tensor, positive: Tensor) -> Tensor:
    """Average precision: sum over distinct thresholds, descending, of (R_t - R_prev) * P_t (scikit-learn's and
    torchmetrics' definition, no interpolation)."""
    _, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    groups = int(inverse.max()) + 1
    hits = torch.zeros(groups, dtype=torch.float64).index_add_(0, inverse, positive.to(torch.float64))
    sizes = torch.bincount(inverse, minlength=groups).to(torch.float64)
    true_pos = hits.flip(0).cumsum(0)  # positives scoring >= each threshold, highest threshold first
    precision = true_pos / sizes.flip(0).cumsum(0)
    recall_steps = hits.flip(0) / true_pos[-1]
    return (recall_steps * precision).sum()


OOD_METRIC_VARIANTS: dict[str, str] = {
    "auroc": "area under the ROC curve, ties counting one half",
    "aupr_in": "average precision with the in-distribution test set as the positive class (AUPR-In)",
    "aupr_out": "average precision with the OOD set as the positive class, scored by the negated score (AUPR-Out)",
    "fpr95": "fraction of OOD inputs scored at or above the threshold where 95% of in-distribution inputs pass",
}


def ood_metrics(scores_in: Tensor, scores_out: Tensor) -> dict[str, float]:
    """OOD detection metrics; higher score = more in-distribution.

    Returns:
        ``auroc`` (ties count one half; the same either way round), ``aupr_in`` (average precision,
        in-distribution positive), ``aupr_out`` (average precision, OOD positive, ranked by the negated
        score), ``fpr95``: the fraction of OOD scores >= the threshold τ, where τ
        is the largest threshold with TPR = P(score_in >= τ) >= 0.95 (the ROC point where TPR first
        reaches 95%, as ``sklearn.metrics.roc_curve`` gives it).
    """
    s_in = torch.as_tensor(scores_in).detach().flatten().to(torch.float64)
    s_out = torch.as_tensor(scores_out).detach().flatten().to(torch.float64).to(s_in.device)
    if s_in.numel() == 0 or s_out.numel() == 0:
        raise ValueError("ood_metrics needs at least one in-distribution and one OOD score")
    if bool(torch.isnan(s_in).any()) or bool(torch.isnan(s_out).any()):
        raise ValueError("OOD scores contain NaN")

    scores = torch.cat([s_in, s_out])
    positive = torch.cat([torch.ones_like(s_in, dtype=torch.bool), torch.zeros_like(s_out, dtype=torch.bool)])
    auroc, aupr_in = _auroc(scores, positive), _average_precision(scores, positive)
    aupr_out = _average_precision(-scores, ~positive)

    n_in = s_in.numel()
    k = int(np.ceil(FPR_AT_TPR * n_in - 1e-9))  # number of in-distribution scores that must pass
    k = min(max(k, 1), n_in)
    tau = torch.sort(s_in, descending=True).values[k - 1]
    fpr = (s_out >= tau).to(torch.float64).mean()
    return {"auroc": float(auroc), "aupr_in": float(aupr_in), "aupr_out": float(aupr_out), "fpr95": float(fpr)}


# --------------------------------------------------------------------------------------------
# Uncertainty scores from posterior samples
# --------------------------------------------------------------------------------------------

def _entropy(p: Tensor) -> Tensor:
    """Entropy (nats) over the last dimension, 0·log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


def expected_entropy(sample_probs: Tensor) -> Tensor:
    """Per input, the mean over the K samples of each sample's predictive entropy (nats, float64)."""
    return _entropy(torch.as_tensor(sample_probs).detach().to(torch.float64)).mean(0)


def uncertainty_scores(sample_probs: Tensor) -> dict[str, Tensor]:
    """Per-input confidence scores (higher = more confident / in-distribution) from K x N x C samples.

    Returns (each of shape N, float64 computation, cast to the input's floating dtype):
        ``max_prob``: max_c p̄_c with p̄ the mean over the K samples;
        ``neg_entropy``: −H(p̄) (predictive entropy, nats);
        ``neg_mutual_info``: −(H(p̄) − mean_k H(p_k)), minus the mutual information between label
        and weights (epistemic part), clamped at 0 against round-off (MI >= 0 by Jensen).
    """
    sample_probs = torch.as_tensor(sample_probs)
    if sample_probs.ndim != 3 or sample_probs.shape[0] == 0:
        raise ValueError(f"sample_probs must be K x N x C with K >= 1, got shape {tuple(sample_probs.shape)}")
    out_dtype = sample_probs.dtype if sample_probs.is_floating_point() else torch.get_default_dtype()
    p = sample_probs.detach().to(torch.float64)
    scores = scores_from_mixture(p.mean(0), expected_entropy(p))
    return {name: value.to(out_dtype) for name, value in scores.items()}


def scores_from_mixture(mean_probs: Tensor, mean_entropy: Tensor) -> dict[str, Tensor]:
    """The scores of :func:`uncertainty_scores` from the predictive mean (N x C) and the mean entropy of the
    components (N): also the scores of an ensemble, whose components are every member's samples."""
    mean = torch.as_tensor(mean_probs).detach().to(torch.float64)
    h_mean = _entropy(mean)
    mi = (h_mean - torch.as_tensor(mean_entropy).to(torch.float64)).clamp_min(0.0)
    return {"max_prob": mean.max(-1).values, "neg_entropy": -h_mean, "neg_mutual_info": -mi}
