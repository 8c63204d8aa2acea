"""Posterior evaluation (reference section 5): mean-weight prediction and the K-sample posterior predictive.

The posterior predictive averages the softmax of K full weight samples; each sample
theta = mu + sigma * eps is drawn once and kept fixed across the whole test set. A point-estimate method
(``Method.posterior = "point"``) predicts with one forward pass of its weights: its "samples" are that one.

    probs = predict(model, x, y, mean=..., std=..., mode="mean")
    samples = posterior_samples(model, x, y, mean=..., std=..., num_samples=10, generator=g)  # K x N x C
    samples = predictive_samples(model, x, y, point=False, num_samples=10, seed=0, mean=..., std=...)
"""

from __future__ import annotations

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


def predictive_samples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, point: bool, num_samples: int, seed: int,
                       mean, std, batch_size: int = 500, device: str | torch.device = "cpu") -> torch.Tensor:
    """The samples whose mean is the run's predictive: K posterior weight samples (the seeded generator every
    evaluation of the run uses), or for a point estimate its one mean-weight prediction (1 x N x C)."""
    common = dict(mean=mean, std=std, batch_size=batch_size, device=device)
    if point:
        return predict(model, x, y, mode="mean", **common)[None]
    return posterior_samples(model, x, y, num_samples=num_samples, generator=posterior_generator(seed), **common)


def num_predictive_samples(point: bool, num_samples: int) -> int:
    return 1 if point else num_samples


def predictive_description(point: bool, num_samples: int) -> str:
    return ("point estimate: softmax of one forward pass with the trained weights" if point else
            f"posterior predictive: mean softmax of {num_samples} weight samples")
