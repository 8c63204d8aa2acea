"""Selective prediction: does a model's confidence rank its own errors? The risk–coverage curve and its areas.

The test points are ranked by their maximum predicted probability, most confident first. At coverage k/n the
model answers only its k most confident points; the risk is their error rate. Points with equal confidence
have no order of their own, so each one of a tie group counts the group's mean error (the expectation over
every order of the group: the curve does not depend on how a sort breaks ties).

    aurc(probs, labels)                  # area under the risk-coverage curve, lower is better
    augrc(probs, labels)                 # area under the generalized risk-coverage curve (risk x coverage)
    risk_coverage(probs, labels)         # {"coverage": [...], "risk": [...]} on a fixed grid, for figures

The areas follow torch-uncertainty's ``AURC`` / ``AUGRC`` (0.13): the trapezoid rule over the coverages
1/n, ..., 1, divided by (1 - 1/n) as if the support were [0, 1]; NaN for n < 2 (tests/test_views.py checks
both against the package on points without ties).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COVERAGE_GRID = 50  # points of the stored curve: coverage 1/50, 2/50, ..., 1


def _risks(probs: Tensor, labels: Tensor) -> Tensor:
    """Error rate of the k most confident points, k = 1..n (float64), tie groups averaged."""
    confidence, prediction = torch.as_tensor(probs).to(torch.float64).max(1)
    errors = (prediction != torch.as_tensor(labels)).to(torch.float64)
    values, group, counts = torch.unique(-confidence, sorted=True, return_inverse=True, return_counts=True)
    group_error = torch.zeros(len(values), dtype=torch.float64).index_add_(0, group, errors) / counts
    order = torch.argsort(group, stable=True)  # most confident group first
    expected = group_error[group[order]]
    return expected.cumsum(0) / torch.arange(1, len(expected) + 1, dtype=torch.float64)


def _area(curve: Tensor) -> float:
    n = len(curve)
    if n < 2:
        return math.nan
    coverage = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.trapezoid(curve, coverage) / (1 - 1 / n))


def aurc(probs: Tensor, labels: Tensor) -> float:
    return _area(_risks(probs, labels))


def augrc(probs: Tensor, labels: Tensor) -> float:
    risks = _risks(probs, labels)
    coverage = torch.arange(1, len(risks) + 1, dtype=torch.float64) / len(risks)
    return _area(risks * coverage)


def risk_coverage(probs: Tensor, labels: Tensor, points: int = COVERAGE_GRID) -> dict[str, list[float]]:
    """The risk at coverage j/points (j = 1..points): the error rate of the ceil(j n / points) most confident."""
    risks = _risks(probs, labels)
    n = len(risks)
    coverage = [j / points for j in range(1, points + 1)]
    return {"coverage": coverage, "risk": [float(risks[max(1, math.ceil(c * n - 1e-9)) - 1]) for c in coverage]}
