"""BatchNorm repair: re-estimate the running statistics of every BatchNorm layer by forward passes over the
training data, with no gradient step (post-hoc compression's standard repair after pruning).

Pruning changes every layer's output distribution, but the running mean and variance that evaluation uses
still describe the dense network's activations. The statistics are reset and re-accumulated as a cumulative
average (``momentum=None``) over one epoch of training batches, drawn and augmented exactly as in training
(batch size, random crop and flip, a seeded generator), in the layers' training forward mode (the LRT for a
Gaussian posterior: the same activations that trained the statistics in the first place). Nothing but the
running statistics (and their batch counters) changes.

    info = reestimate_batchnorm(model, data, batch_size=128, generator=g, mode="lrt", device=device)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .batches import iterate_batches
from .layers import set_mode


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, data, *, batch_size: int, generator: torch.Generator, mode: str,
                         device: torch.device) -> dict:
    """Reset and re-accumulate every BatchNorm layer's running statistics over one epoch of training batches;
    returns what was done (forward mode, batches, examples) for metrics.json."""
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over every batch of the pass
    model.train()
    set_mode(model, mode)
    batches = examples = 0
    try:
        for inputs, labels in iterate_batches(data.x_train, data.y_train, batch_size, mean=data.mean, std=data.std,
                                              shuffle=True, augment=data.augment, generator=generator, device=device):
            model(inputs)
            batches += 1
            examples += len(labels)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return {"layers": len(layers), "forward_mode": mode, "batches": batches, "examples": examples,
            "batch_size": batch_size, "augmentation": bool(data.augment), "gradient_steps": 0,
            "statistics": "running mean and variance reset, then a cumulative average over one epoch of training "
                          "batches (no gradient step)"}
