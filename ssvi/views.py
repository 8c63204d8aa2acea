"""The uncertainty views of one predictive distribution, as ``metrics.json`` records them: the metrics, the
temperature-scaled metrics, and the curves the figures draw (reliability bins, risk–coverage).

One function serves every place that has predictive probabilities and labels: the trainer at the end of a
run, the report layer for runs made before a view was recorded (from their stored ``predictions.pt``) and
for ensembles (from their members' stored probabilities).

    views = predictive_views(probs, labels)
    views["metrics"]["ace"], views["temperature_scaled"]["nll"], views["curves"]["risk_coverage"]
"""

from __future__ import annotations

from torch import Tensor

from .metrics import classification_metrics, reliability_bins
from .selective import risk_coverage
from .temperature import RULE, cross_fitted

CALIBRATED_METRICS = ("nll", "ece", "ace", "brier")  # what temperature scaling can change (acc cannot)
# recorded in metrics.json; a run whose recorded views are of another version has them recomputed by the report
# layer from its predictions.pt (2: adaptive ECE independent of the order of tied confidences; temperature rules
# for halves with too few errors and searches that end at the limit)
VIEWS_VERSION = 2
CURVES_NOTE = ("reliability: per equal-width confidence bin [k/15, (k+1)/15) the count, summed confidence and "
               "number correct of the posterior predictive; risk_coverage: error rate of the most confident "
               "fraction (coverage) of the test set, ties averaged")


def temperature_scaled(probs: Tensor, labels: Tensor) -> dict:
    """NLL, ECE, adaptive ECE and Brier after cross-fitted temperature scaling, and the two temperatures."""
    fitted = cross_fitted(probs, labels)
    metrics = classification_metrics(fitted["probs"], labels)
    return {**{k: metrics[k] for k in CALIBRATED_METRICS}, "temperatures": fitted["temperatures"],
            "unfitted": fitted["unfitted"], "at_limit": fitted["at_limit"], "rule": RULE}


def curves(probs: Tensor, labels: Tensor) -> dict:
    return {"reliability": reliability_bins(probs, labels), "risk_coverage": risk_coverage(probs, labels)}


def predictive_views(probs: Tensor, labels: Tensor) -> dict:
    return {"metrics": classification_metrics(probs, labels), "temperature_scaled": temperature_scaled(probs, labels),
            "curves": curves(probs, labels), "version": VIEWS_VERSION}
