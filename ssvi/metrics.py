"""Evaluation metrics: classification (accuracy, NLL, two ECEs, Brier), OOD detection, uncertainty scores.

Two ECEs are reported because the paper's code and the literature differ (reference §5):

* ``ece`` — top-label L1 ECE with 15 equal-width bins (Guo et al. 2017), computed by
  ``torchmetrics.classification.MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")``.
  torchmetrics' bins are left-closed, [k/15, (k+1)/15), and a confidence of exactly 1.0 falls in
  a bin of its own.
* ``ece_ssvi`` — the authors' "ECE": ``calibration.get_calibration_error(probs, labels)`` of the
  PyPI package ``uncertainty-calibration`` (import name ``calibration``; the project pins 0.1.4)
  with its defaults: marginal (class-wise) L2 calibration error, debiased, averaged over classes
  as sqrt(mean_k CE_k²), 15 equal-mass bins per class. The package switches to one bin per
  distinct value for a class column with fewer than n/4 distinct probabilities (e.g. one-hot
  predictions). The debiased estimate is clipped at 0 per class, so it can be exactly 0.0 on a
  small accurate test set. If the package raises, ``ece_ssvi`` is NaN and a warning is logged.

OOD detection uses the convention "higher score = more in-distribution"; in-distribution is the
positive class.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

__all__ = ["METRIC_VARIANTS", "classification_metrics", "ood_metrics", "uncertainty_scores"]

log = logging.getLogger(__name__)

NLL_PROB_FLOOR = 1e-12
ECE_BINS = 15
FPR_AT_TPR = 0.95
_PROB_TOL = 1e-3  # tolerance of the probability checks (values in [0, 1], rows summing to 1)

# Failures the uncertainty-calibration package is known to raise on degenerate inputs
# (asserts in its binning, numpy reductions over empty arrays, ...).
_CALIBRATION_ERRORS = (ValueError, AssertionError, IndexError, ZeroDivisionError, FloatingPointError)

METRIC_VARIANTS: dict[str, str] = {
    "acc": "top-1 accuracy, fraction in [0, 1]",
    "nll": f"mean negative log of the predicted probability of the true label (probabilities clamped at "
           f"{NLL_PROB_FLOOR:g}), natural log",
    "ece": f"top-label L1 ECE, {ECE_BINS} equal-width bins (Guo et al. 2017; torchmetrics "
           f"MulticlassCalibrationError, norm='l1')",
    "ece_ssvi": "authors' ECE: uncertainty-calibration get_calibration_error defaults (class-wise, debiased, "
                "L2, 15 equal-mass bins); NaN if the package fails",
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


def calibration_error_ssvi(probs: Tensor, labels: Tensor) -> float:
    """The authors' ECE (``calibration.get_calibration_error`` with defaults); NaN if it raises."""
    import calibration  # uncertainty-calibration

    p = probs.detach().to("cpu", torch.float64).numpy()
    y = labels.detach().to("cpu", torch.int64).numpy()
    try:
        value = calibration.get_calibration_error(p, y)
    except _CALIBRATION_ERRORS as exc:
        log.warning("uncertainty-calibration get_calibration_error failed (%s: %s); ece_ssvi = NaN",
                    type(exc).__name__, exc)
        return float("nan")
    return float(value)


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy, NLL, ECE (two variants) and Brier score of predicted probabilities.

    Args:
        probs: N x C predicted (e.g. posterior-averaged) probabilities; rows must sum to 1.
        labels: N integer labels in [0, C).

    Returns:
        ``{"acc", "nll", "ece", "ece_ssvi", "brier"}`` as Python floats and ``nll_floor_hits`` (an int);
        see :data:`METRIC_VARIANTS`.
    """
    from torchmetrics.classification import MulticlassCalibrationError

    probs, labels = _check_probs(probs, labels)
    num_classes = probs.shape[1]
    p64 = probs.detach().to(torch.float64)
    idx = torch.arange(labels.shape[0], device=labels.device)
    p_true = p64[idx, labels]

    acc = (p64.argmax(1) == labels).to(torch.float64).mean()
    nll = -torch.log(p_true.clamp_min(NLL_PROB_FLOOR)).mean()
    onehot = torch.zeros_like(p64)
    onehot[idx, labels] = 1.0
    brier = ((p64 - onehot) ** 2).sum(1).mean()

    ece_metric = MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1").to(probs.device)
    ece = ece_metric(probs.detach(), labels)

    return {
        "acc": float(acc),
        "nll": float(nll),
        "ece": float(ece),
        "ece_ssvi": calibration_error_ssvi(probs, labels),
        "brier": float(brier),
        "nll_floor_hits": int((p_true < NLL_PROB_FLOOR).sum()),
    }


# --------------------------------------------------------------------------------------------
# Out-of-distribution detection
# --------------------------------------------------------------------------------------------

def _dense_ranks01(x: Tensor) -> Tensor:
    """Order-preserving, tie-preserving map of scores to [0, 1] (dense ranks / max rank).

    torchmetrics applies a sigmoid to binary "preds" outside [0, 1]; in float32 a sigmoid merges
    distinct large scores into ties. AUROC and AP depend only on the order (and ties), so ranks give
    exactly the same values without that loss.
    """
    _, inverse = torch.unique(x, sorted=True, return_inverse=True)
    inverse = inverse.to(torch.float64)
    top = inverse.max()
    return inverse / top if top > 0 else inverse


def ood_metrics(scores_in: Tensor, scores_out: Tensor) -> dict[str, float]:
    """OOD detection metrics; higher score = more in-distribution; in-distribution is positive.

    Returns:
        ``auroc`` (torchmetrics BinaryAUROC; ties count one half), ``aupr`` (BinaryAveragePrecision,
        in-distribution positive), ``fpr95``: the fraction of OOD scores >= the threshold τ, where τ
        is the largest threshold with TPR = P(score_in >= τ) >= 0.95 (the ROC point where TPR first
        reaches 95%, as ``sklearn.metrics.roc_curve`` gives it).
    """
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    s_in = torch.as_tensor(scores_in).detach().flatten().to(torch.float64)
    s_out = torch.as_tensor(scores_out).detach().flatten().to(torch.float64).to(s_in.device)
    if s_in.numel() == 0 or s_out.numel() == 0:
        raise ValueError("ood_metrics needs at least one in-distribution and one OOD score")
    if bool(torch.isnan(s_in).any()) or bool(torch.isnan(s_out).any()):
        raise ValueError("OOD scores contain NaN")

    scores = torch.cat([s_in, s_out])
    target = torch.cat([torch.ones_like(s_in, dtype=torch.long), torch.zeros_like(s_out, dtype=torch.long)])
    preds = _dense_ranks01(scores)
    auroc = BinaryAUROC(thresholds=None).to(preds.device)(preds, target)
    aupr = BinaryAveragePrecision(thresholds=None).to(preds.device)(preds, target)

    n_in = s_in.numel()
    k = int(np.ceil(FPR_AT_TPR * n_in - 1e-9))  # number of in-distribution scores that must pass
    k = min(max(k, 1), n_in)
    tau = torch.sort(s_in, descending=True).values[k - 1]
    fpr = (s_out >= tau).to(torch.float64).mean()
    return {"auroc": float(auroc), "aupr": float(aupr), "fpr95": float(fpr)}


# --------------------------------------------------------------------------------------------
# Uncertainty scores from posterior samples
# --------------------------------------------------------------------------------------------

def _entropy(p: Tensor) -> Tensor:
    """Entropy (nats) over the last dimension, 0·log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


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
    mean = p.mean(0)
    h_mean = _entropy(mean)
    mean_h = _entropy(p).mean(0)
    mi = (h_mean - mean_h).clamp_min(0.0)
    return {
        "max_prob": mean.max(-1).values.to(out_dtype),
        "neg_entropy": (-h_mean).to(out_dtype),
        "neg_mutual_info": (-mi).to(out_dtype),
    }
