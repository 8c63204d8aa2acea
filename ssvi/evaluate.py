"""Posterior evaluation (reference section 5): mean-weight prediction and the K-sample posterior predictive.

The posterior predictive averages the softmax of K full weight samples; each sample
theta = mu + sigma * eps is drawn once and kept fixed across the whole test set. Which samples a run's
predictive averages is its method's (``Method.predictive_samples``: K weight samples of a Gaussian posterior,
one forward pass of a point estimate, IVON's or Laplace's samples, dropout masks); these are the pieces.

    probs = predict(model, x, y, mean=..., std=..., mode="mean")
    samples = posterior_samples(model, x, y, mean=..., std=..., num_samples=10, generator=g)  # K x N x C
    with seeded_global_rng(seed, device): ...   # samples drawn from torch's global generator (IVON, dropout)
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from .batches import iterate_batches
from .layers import resample, set_mode


EVAL_SEED_OFFSET = 7919  # posterior samples are drawn from their own seeded stream, apart from training's


def posterior_generator(seed: int) -> torch.Generator:
    """The generator of a run's K evaluation weight samples: every evaluation of a run sees the same samples."""
    return torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mean, std, batch_size: int = 500,
            mode: str = "mean", device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax probabilities (N x C, float32, on CPU) in the given Bayesian forward mode, eval-mode BN."""
    was_training = model.training
    model.eval()
    set_mode(model, mode)
    try:
        outputs = [model(inputs).softmax(dim=1).float().cpu()
                   for inputs, _ in iterate_batches(x, y, batch_size, mean=mean, std=std, shuffle=False,
                                                    augment=False, generator=None, device=device)]
    finally:
        set_mode(model, "lrt")
        model.train(was_training)
    return torch.cat(outputs)


@torch.no_grad()
def posterior_samples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mean, std, num_samples: int,
                      generator: torch.Generator, batch_size: int = 500,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """Probabilities of ``num_samples`` posterior weight samples: K x N x C (the predictive is the mean over K)."""
    samples = []
    for _ in range(num_samples):
        resample(model, generator)
        samples.append(predict(model, x, y, mean=mean, std=std, batch_size=batch_size, mode="sample", device=device))
    return torch.stack(samples)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: str | torch.device = "cpu"):
    """torch's global generator (and the device's) seeded with the run's evaluation seed for the block, then
    restored: samples a library draws from it (IVON's weights, dropout masks) are the same at every evaluation,
    and training's random stream is left as it was."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + EVAL_SEED_OFFSET)
        yield
