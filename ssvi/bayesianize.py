"""Turn an ordinary torch model into a mean-field Bayesian one.

Every ``nn.Conv2d`` and ``nn.Linear`` is replaced in place by a :class:`BayesConv2d` /
:class:`BayesLinear` with the same shape and hyperparameters; BatchNorm and biases stay
deterministic. Works on any architecture built from those modules (hand-written, torchvision, timm).

    model = bayesianize(torchvision.models.resnet18(num_classes=10))
"""

from __future__ import annotations

import torch.nn as nn

from .layers import BayesConv2d, BayesianLayer, BayesLinear, PosteriorInit


def _bayesian_twin(module: nn.Module, init: PosteriorInit) -> BayesianLayer | None:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"bayesianize supports zero padding only, got padding_mode={module.padding_mode!r}")
        twin = BayesConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                           module.padding, module.dilation, module.groups, module.bias is not None, init)
    elif isinstance(module, nn.Linear):
        twin = BayesLinear(module.in_features, module.out_features, module.bias is not None, init)
    else:
        return None
    if module.bias is not None:
        twin.bias.data.copy_(module.bias.data)  # keep the architecture's own deterministic bias init
    return twin.to(module.weight.device)


def bayesianize(model: nn.Module, init: PosteriorInit = PosteriorInit()) -> nn.Module:
    """Replace Conv2d/Linear submodules of ``model`` by Bayesian twins; returns the same object."""
    for name, child in list(model.named_children()):
        twin = _bayesian_twin(child, init)
        if twin is not None:
            setattr(model, name, twin)
        else:
            bayesianize(child, init)
    return model
