"""FLOPs accounting: the suite's convention (reference section 6). All numbers are FLOPs, 2 per multiply-add.

- Dense per-layer forward FLOPs f_l come from ``torch.utils.flop_counter.FlopCounterMode`` on one example
  with posterior-mean weights (one convolution / matmul per Bayesian layer).
- Sparse forward: f_S = sum_l density_l * f_l + (FLOPs outside Bayesian layers, counted dense).
  Test FLOPs of a run = f_S at its final densities (one mean-weight forward per example).
- Training forward of a Bayesian layer under the local reparameterization trick costs two convolutions
  (mean and variance path): f^train = LRT_FORWARD_FACTOR * (Bayesian part) + the rest. A point-estimate
  method (``Method.posterior = "point"``) computes one product per layer: f^train = 1 * (Bayesian part) + the rest.
- Per training step and example, following RigL (Evci et al. 2020), with f^train at the current densities:
    dense VI             3 * f_D
    static sparse        3 * f_S
    SSVI (step < T_end)  (3 * f_S * dT + 2 * f_S + f_D) / (dT + 1)     (dense gradient on update steps)
    SSVI (step >= T_end) 3 * f_S
    gradual pruning      3 * f(d_t) at the density of that step
    post-hoc             the dense run's total + 3 * f_S per fine-tuning step + f^train_S per example of the
                         BatchNorm re-estimation pass (forward only)
  Totals = sum over steps of (per-step FLOPs x examples in that step's batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import bayesian_layers, set_mode

LRT_FORWARD_FACTOR = 2  # mean and variance convolutions
BACKWARD_FACTOR = 3     # forward + backward (input and weight gradients), RigL's convention
UNIT = "FLOPs (2 per multiply-add)"


@dataclass(frozen=True)
class FlopProfile:
    """Dense forward FLOPs per example: each Bayesian layer's, and everything else's."""

    layer_flops: dict[str, float]
    other_flops: float

    @property
    def dense_forward(self) -> float:
        return sum(self.layer_flops.values()) + self.other_flops

    def forward(self, densities: dict[str, float] | None = None) -> float:
        """Forward FLOPs per example with the given per-layer densities (missing layers are dense)."""
        densities = densities or {}
        return sum(f * densities.get(n, 1.0) for n, f in self.layer_flops.items()) + self.other_flops

    def training_forward(self, densities: dict[str, float] | None = None, products: int = LRT_FORWARD_FACTOR) -> float:
        """Training forward per example: ``products`` convolutions per Bayesian layer (LRT: two)."""
        bayesian = self.forward(densities) - self.other_flops
        return products * bayesian + self.other_flops


@torch.no_grad()
def profile_model(model: nn.Module, input_shape: tuple[int, int, int]) -> FlopProfile:
    """Count dense forward FLOPs of one ``input_shape`` (C, H, W) example, per Bayesian layer."""
    from torch.utils.flop_counter import FlopCounterMode  # imports triton where installed: only when counting
    layers = bayesian_layers(model)
    modes = {name: layer.mode for name, layer in layers.items()}
    was_training = model.training
    set_mode(model, "mean")
    model.eval()
    device = next(model.parameters()).device
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for name, layer in layers.items():
            layer.mode = modes[name]
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_layer = {name: float(sum(counts.get(f"{root}.{name}", {}).values())) for name in layers}
    return FlopProfile(per_layer, float(counter.get_total_flops()) - sum(per_layer.values()))


def dense_step(profile: FlopProfile, products: int = LRT_FORWARD_FACTOR) -> float:
    return BACKWARD_FACTOR * profile.training_forward(products=products)


def sparse_step(profile: FlopProfile, densities: dict[str, float], products: int = LRT_FORWARD_FACTOR) -> float:
    return BACKWARD_FACTOR * profile.training_forward(densities, products)


def ssvi_update_phase_step(profile: FlopProfile, densities: dict[str, float], delta_t: int,
                           products: int = LRT_FORWARD_FACTOR) -> float:
    """Average per-step FLOPs while subspace updates run: one dense-gradient step every delta_t."""
    f_sparse, f_dense = profile.training_forward(densities, products), profile.training_forward(products=products)
    return (BACKWARD_FACTOR * f_sparse * delta_t + 2 * f_sparse + f_dense) / (delta_t + 1)
