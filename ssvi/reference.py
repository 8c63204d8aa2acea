"""Plain reference implementation of the Bayesian layer: the baseline every speedup is measured against.

Deliberately unoptimised and independent of the production code in :mod:`ssvi.layers` (it reads only the
layer's parameters, its mask and its convolution geometry):

  - LRT forward: separate mean and variance convolutions (or linears), the mask multiplied into BOTH mu
    and sigma^2 on every call, sigma = softplus(rho) recomputed on every call, no fusion, no caching;
  - KL: computed standalone from rho (its own softplus), the textbook formula times the mask.

    with reference_path(model):           # every Bayesian layer of the model uses the reference
        loss = F.cross_entropy(model(x), y) + beta * reference_total_kl(model, prior_std)

RNG consumption is the production LRT forward's: one ``randn_like`` of the layer output per Bayesian
layer call, in forward order, so under the same seed the two paths give the same outputs up to
floating-point rounding.

Gradient convention: SSVI's addition step reads the *dense* gradient dL/dmu (inactive entries
included), which the production layer provides because inactive mu are kept at exactly 0 and never
masked. The reference therefore multiplies the mask into mu's *values* (paying the multiplication) but
passes the gradient through unmasked (straight-through; identical values because inactive mu are 0), so
both paths give the same gradient for every parameter. The variance path's mask multiplication is an
ordinary one (sigma^2 of inactive weights would otherwise be softplus(0)^2), so rho's gradient is
masked in both paths.
"""

from __future__ import annotations

import contextlib
import math
import types
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BayesConv2d, BayesianLayer, BayesLinear, bayesian_layers

LRT_EPS = 1e-8  # the production constant (ssvi.layers.LRT_EPS), restated so the reference stands alone


class _MaskValues(torch.autograd.Function):
    """``w * mask`` in the forward pass, the gradient passed through unmasked (see the module docstring)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def reference_op(layer: BayesianLayer, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's deterministic operation, written out from its geometry (not via ``layer._op``)."""
    if isinstance(layer, BayesConv2d):
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, BayesLinear):
        return F.linear(x, weight, bias)
    return layer._op(x, weight, bias)  # other BayesianLayer subclasses: their own op


def reference_forward(layer: BayesianLayer, x: torch.Tensor) -> torch.Tensor:
    """Plain forward of one Bayesian layer in its current mode (``lrt``, ``mean`` or ``sample``)."""
    if layer.mode == "sample":
        if layer.sampled_weight is None:
            raise RuntimeError("sample mode needs a weight sample: call ssvi.layers.resample(model) first")
        return reference_op(layer, x, layer.sampled_weight, layer.bias)
    mask = layer.mask.to(layer.weight_mu.dtype)
    mu = _MaskValues.apply(layer.weight_mu, mask)
    if layer.mode == "mean":
        return reference_op(layer, x, mu, layer.bias)
    if layer.mode != "lrt":
        raise ValueError(f"unknown Bayesian forward mode {layer.mode!r}")
    sigma = F.softplus(layer.weight_rho)
    variance_weight = sigma.pow(2) * mask
    mean = reference_op(layer, x, mu, layer.bias)
    var = reference_op(layer, x * x, variance_weight, None)
    return mean + torch.sqrt(var + LRT_EPS) * torch.randn_like(mean)


def reference_kl(layer: BayesianLayer, prior_std: float) -> torch.Tensor:
    """KL(q || N(0, prior_std^2)) summed over active weights, from mu and rho alone."""
    mu = layer.weight_mu
    sigma = F.softplus(layer.weight_rho)
    kl = math.log(prior_std) - torch.log(sigma) + (sigma.pow(2) + mu.pow(2)) / (2 * prior_std**2) - 0.5
    return (kl * layer.mask).sum()


def reference_total_kl(model: nn.Module, prior_std: float) -> torch.Tensor:
    """Sum of :func:`reference_kl` over every Bayesian layer (independent of ``ssvi.layers.total_kl``)."""
    return sum(reference_kl(layer, prior_std) for layer in bayesian_layers(model).values())


@torch.no_grad()
def reference_masked_step(optimizer: torch.optim.Optimizer, layers: dict[str, BayesianLayer]) -> None:
    """The plain masked optimiser step: mask gradients, step, re-zero inactive weights and momentum."""
    for layer in layers.values():
        mask = layer.mask
        for p in (layer.weight_mu, layer.weight_rho):
            if p.grad is not None:
                p.grad.mul_(mask)
    optimizer.step()
    for layer in layers.values():
        mask = layer.mask
        for p in (layer.weight_mu, layer.weight_rho):
            p.mul_(mask)
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(mask)


_MISSING = object()


@contextlib.contextmanager
def reference_path(model: nn.Module) -> Iterator[nn.Module]:
    """Make every Bayesian layer of ``model`` use :func:`reference_forward` and :func:`reference_kl`.

    Replaces each layer's ``forward`` and ``kl`` by bound methods on the instance and restores whatever
    was there on exit (also on error). Code that does not go through ``layer.kl`` (a fused total KL)
    is not redirected: use :func:`reference_total_kl` to be sure.
    """
    saved = []
    try:
        for layer in bayesian_layers(model).values():
            saved.append((layer, layer.__dict__.get("forward", _MISSING), layer.__dict__.get("kl", _MISSING)))
            layer.forward = types.MethodType(reference_forward, layer)
            layer.kl = types.MethodType(reference_kl, layer)
        yield model
    finally:
        for layer, forward, kl in saved:
            for name, old in (("forward", forward), ("kl", kl)):
                if old is _MISSING:
                    layer.__dict__.pop(name, None)
                else:
                    layer.__dict__[name] = old
