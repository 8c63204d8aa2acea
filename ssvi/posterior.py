"""The kinds of posterior a method can declare, and what the trainer, the FLOPs count and the evaluation read
from each (``Method.posterior`` names one; :data:`POSTERIORS` holds them).

    kind        trains with                                 predicts with (K = run option num_samples)
    gaussian    LRT forward, loss = CE + scaled KL          K weight samples of the Bayesian layers
    point       mean weights, loss = CE                     one forward pass (K = 1)
    optimizer   mean weights at one weight sample drawn     K weight samples drawn by the optimiser (IVON)
                from the optimiser's state per step
    fitted      nothing (a finished point estimate,         K samples of the fitted posterior's predictive
                ``init_from``), then a fit after training   (last-layer Laplace)
    dropout     mean weights with dropout on                K forward passes with fresh dropout masks

Only ``gaussian`` trains rho and adds a KL term; only ``point`` predicts with one forward pass. A training
forward computes two products per Bayesian layer under the LRT and one otherwise (:mod:`ssvi.flops`). The
method supplies what a kind needs beyond that through its hooks (``build_optimizer``, ``training_sample``,
``kl``, ``predictive_samples``, ``posterior_state`` ...: :class:`ssvi.methods.Method`), so the training loop
and the evaluation have no case per method.
"""

from __future__ import annotations

from dataclasses import dataclass

GAUSSIAN, POINT, OPTIMIZER, FITTED, DROPOUT = "gaussian", "point", "optimizer", "fitted", "dropout"


@dataclass(frozen=True)
class Posterior:
    kind: str
    training_mode: str  # the Bayesian layers' forward mode in training: "lrt" or "mean"
    variational: bool   # rho is trained and the loss has the KL term
    sampled: bool       # a prediction averages K samples (False: one forward pass)
    description: str    # metrics.json "posterior_description"


POSTERIORS = {p.kind: p for p in (
    Posterior(GAUSSIAN, "lrt", True, True,
              "mean-field Gaussian over the weights: local reparameterization and KL in training, K weight samples"),
    Posterior(POINT, "mean", False, False, "point estimate: the trained weights, one forward pass"),
    Posterior(OPTIMIZER, "mean", False, True,
              "Gaussian held in the optimiser's state: each step's gradient at one weight sample from it, "
              "K weight samples at prediction"),
    Posterior(FITTED, "mean", False, True,
              "fitted after training on a finished point estimate (init_from), K samples of its predictive"),
    Posterior(DROPOUT, "mean", False, True,
              "dropout masks: trained with dropout on, K forward passes with fresh masks at prediction"),
)}
