"""Temperature scaling, fitted on points that are not scored with it: the calibrated view of every run.

One rule for every method (SSVI, the baselines, the deterministic sparse network, ensembles): the logits are
the log of the predictive probabilities that the run reports (for a Bayesian run the posterior-predictive
mean over K weight samples, for an ensemble the mean over its members, for a point estimate its softmax), so
the scaled prediction is softmax(log p / T) ∝ p^(1/T). T is the minimiser of the mean NLL over
[T_MIN, T_MAX] (a bounded scalar search in float64; the NLL is convex in 1/T).

Two-fold cross-fitting on the test set: the test points are split into two halves by a permutation seeded
with FOLD_SEED (so every run of a test set uses the same halves); T_a is fitted on half a and scales the
points of half b, T_b is fitted on b and scales a. No point is scored with a temperature fitted on itself.

Edge cases: a half with fewer than MIN_FIT_ERRORS misclassified points cannot tell a temperature (with none, the
NLL falls as T -> 0 and the fit would sharpen the other half to the search limit); its T is 1 (the other half
stays as reported) and the record counts it (``unfitted``). A fitted T at an end of [T_MIN, T_MAX] is recorded as
``at_limit``: the best temperature may lie outside the search range.

    view = cross_fitted(probs, labels)   # {"probs": calibrated N x C, "temperatures": [T_a, T_b], ...}
    fit_temperature(probs, labels)       # one temperature from all the given points
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from torch import Tensor

T_MIN, T_MAX = 0.05, 20.0
FOLD_SEED = 20240217
MIN_FIT_ERRORS = 5
LOG_FLOOR = float(np.finfo(np.float32).tiny)  # log(0) would make -inf logits; p below this is 0 in fp32 anyway
RULE = (f"temperature scaling, two-fold cross-fitted on the test set: halves drawn by a permutation seeded "
        f"{FOLD_SEED}, T fitted on one half (minimum NLL over [{T_MIN:g}, {T_MAX:g}]) scales the other; logits = "
        "log of the reported predictive probabilities (posterior-predictive mean for Bayesian runs, member mean "
        f"for ensembles, softmax for point estimates); a half with fewer than {MIN_FIT_ERRORS} errors fits no "
        "temperature (T = 1 for the other half)")


def _logits(probs) -> np.ndarray:
    return np.log(np.clip(torch.as_tensor(probs).detach().to(torch.float64).cpu().numpy(), LOG_FLOOR, None))


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    return np.exp(z - logsumexp(z, axis=1, keepdims=True))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def fit_temperature(probs, labels) -> float:
    """The temperature in [T_MIN, T_MAX] that minimises the mean NLL of softmax(log probs / T) on these points."""
    logits = _logits(probs)
    labels = torch.as_tensor(labels).cpu().numpy()
    result = minimize_scalar(lambda log_t: _nll(logits, labels, math.exp(log_t)),
                             bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-7})
    return math.exp(result.x)


def folds(n: int) -> tuple[Tensor, Tensor]:
    """The two halves (index tensors) of a test set of ``n`` points; the same for every run of that set."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(FOLD_SEED))
    return order[: n // 2], order[n // 2:]


def at_limit(temperature: float) -> bool:
    return math.isclose(temperature, T_MIN, rel_tol=1e-3) or math.isclose(temperature, T_MAX, rel_tol=1e-3)


def cross_fitted(probs, labels) -> dict:
    """Calibrated probabilities (float64, N x C) where each half is scaled by the temperature fitted on the
    other, the two temperatures (T fitted on half a, T fitted on half b), how many halves had too few errors to
    fit one (``unfitted``: their T is 1) and whether a fitted T sits at the search limit (``at_limit``)."""
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels)
    if len(labels) < 4:
        raise ValueError(f"cross-fitted temperature scaling needs at least 4 test points, got {len(labels)}")
    half_a, half_b = folds(len(labels))
    logits = _logits(probs)
    calibrated = np.empty_like(logits)
    temperatures, unfitted = [], 0
    for fit_on, scored in ((half_a, half_b), (half_b, half_a)):
        errors = int((probs[fit_on].argmax(1) != labels[fit_on]).sum())
        temperature = fit_temperature(probs[fit_on], labels[fit_on]) if errors >= MIN_FIT_ERRORS else 1.0
        unfitted += errors < MIN_FIT_ERRORS
        calibrated[scored.numpy()] = _scaled(logits[scored.numpy()], temperature)
        temperatures.append(temperature)
    return {"probs": torch.from_numpy(calibrated), "temperatures": temperatures, "unfitted": unfitted,
            "at_limit": any(at_limit(t) for t in temperatures)}
